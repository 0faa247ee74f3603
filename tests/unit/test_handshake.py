"""The handshake path fed raw requests: ambiguous or malformed headers get a clean 400, counted,
and no header set, however odd, escapes as an exception (hypothesis over header sets)."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import cast

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from roomcast.core.auth import ProxyTrust
from tests.support.wsharness import FakeTransport, RecordingApp, make_server, make_settings

SECRET = "s" * 40
KEY = base64.b64encode(b"0123456789abcdef").decode()


def request(*headers: tuple[str, str], path: str = "/chat") -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: node"]
    base = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    names = {name.lower() for name, _ in headers}
    lines += [f"{k}: {v}" for k, v in base.items() if k.lower() not in names]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def answer(raw: bytes, registry: CollectorRegistry | None = None, **overrides: object) -> int:
    """The HTTP status the server answered ``raw`` with (0: none)."""
    app = RecordingApp()
    server = make_server(app, make_settings(**overrides), registry)
    transport = FakeTransport()
    conn = server._new_connection()
    conn.connection_made(cast(asyncio.BaseTransport, transport))
    conn.data_received(raw)
    written = transport.take()
    if not written.startswith(b"HTTP/1.1 "):
        return 0
    return int(written[9:12])


@pytest.mark.parametrize(
    "headers",
    [
        (("Origin", "https://a.example"), ("Origin", "https://b.example")),
        (("Host", "other"),),
        (("Authorization", "Bearer a"), ("Authorization", "Bearer b")),
        (("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-For", "5.6.7.8")),
        (("Sec-WebSocket-Key", KEY), ("Sec-WebSocket-Key", KEY)),
        (("Origin", "javascript:alert(1)"),),
        (("Origin", "https://" + "a" * 300),),
        (("Sec-WebSocket-Protocol", "roomcast, roomcast.token.a, roomcast.token.b"),),
        (("Sec-WebSocket-Protocol", ",".join(f"p{i}" for i in range(20))),),
    ],
    ids=lambda h: h[0][0] + (" x2" if len(h) > 1 else " odd"),
)
async def test_ambiguous_or_malformed_security_headers_get_400(
    headers: tuple[tuple[str, str], ...],
) -> None:
    registry = CollectorRegistry()
    assert answer(request(*headers), registry) == 400
    assert registry.get_sample_value("roomcast_handshakes_rejected_total", {"status": "400"}) == 1


async def test_two_tokens_in_the_query_get_400() -> None:
    assert answer(request(path="/chat?token=a&token=b"), auth_secret=SECRET) == 400


async def test_token_in_query_and_subprotocol_gets_400() -> None:
    raw = request(("Sec-WebSocket-Protocol", "roomcast, roomcast.token.b"), path="/chat?token=a")
    assert answer(raw, auth_secret=SECRET) == 400


async def test_forwarded_for_that_is_not_an_address_gets_400_from_a_trusted_proxy() -> None:
    # The harness's peer is 127.0.0.1, trusted by default.
    assert answer(request(("X-Forwarded-For", "1.2.3.4, <script>"))) == 400
    assert answer(request(("X-Forwarded-For", "1.2.3.4, 10.0.0.7"))) == 101


async def test_unparseable_request_gets_400_not_a_silent_close() -> None:
    # websockets refuses these without an answer; nginx took that for a dead node.
    registry = CollectorRegistry()
    raw = request(("Content-Length", "5")) + b"hello"
    assert answer(raw, registry) == 400
    assert registry.get_sample_value("roomcast_auth_failures_total", {"code": "malformed_request"})
    assert answer(b"GET /chat HTTP/1.1\r\nBad Header Name: x\r\n\r\n") == 400
    assert answer(b"\x16\x03\x01\x02\x00 TLS to a plain port\r\n\r\n") == 400


async def test_a_single_of_each_is_accepted() -> None:
    now = int(time.time())
    token = jwt.encode({"sub": "u", "exp": now + 60}, SECRET, "HS256")
    raw = request(
        ("Origin", "https://chat.example.com"),
        ("X-Forwarded-For", "203.0.113.9"),
        ("Sec-WebSocket-Protocol", f"roomcast, roomcast.token.{token}"),
    )
    assert answer(raw, auth_secret=SECRET) == 101


def test_only_the_proxys_own_hop_is_believed() -> None:
    trust = ProxyTrust(["127.0.0.1", "10.0.0.0/8"])
    # A client in a trusted range forging a hop to its left is not believed past its own.
    assert trust.client_address("10.0.0.2", "6.6.6.6, 10.0.0.9") == "10.0.0.9"
    assert trust.client_address("127.0.0.1", "6.6.6.6") == "6.6.6.6"
    assert trust.client_address("198.51.100.1", "6.6.6.6") == "198.51.100.1"
    assert trust.client_address("127.0.0.1", "evil\nline") == "127.0.0.1"
    assert trust.client_address("127.0.0.1", " ::FFFF:1.2.3.4 ") == "::ffff:102:304"


_HEADER_NAMES = st.sampled_from(
    [
        "Origin",
        "Host",
        "Authorization",
        "X-Forwarded-For",
        "Sec-WebSocket-Protocol",
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Version",
        "Sec-WebSocket-Extensions",
        "Upgrade",
        "Connection",
        "Content-Length",
        "Transfer-Encoding",
        "Cookie",
        "X-API-Key",
    ]
)
_VALUES = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=80),
    st.sampled_from(
        [
            "roomcast",
            "roomcast.token.",
            "roomcast, roomcast.token.x",
            "websocket",
            "Upgrade",
            "13",
            KEY,
            "null",
            "https://chat.example.com",
            "1.2.3.4, ::1",
            "permessage-deflate; client_max_window_bits=abc",
            "chunked",
            "-1",
        ]
    ),
)
_PATHS = st.sampled_from(
    ["/chat", "/chat?token=x", "/chat?token=a&token=b", "/other", "/chat?" + "a=1&" * 40, "*"]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    headers=st.lists(st.tuples(_HEADER_NAMES, _VALUES), max_size=8),
    path=_PATHS,
    auth=st.booleans(),
)
def test_any_header_set_gets_an_http_answer_and_never_raises(
    headers: list[tuple[str, str]], path: str, auth: bool
) -> None:
    async def run() -> int:
        overrides: dict[str, object] = {"auth_secret": SECRET} if auth else {}
        overrides["allowed_origins"] = ("https://chat.example.com",)
        return answer(request(*headers, path=path), None, **overrides)

    status = asyncio.run(run())
    assert status in (101, 400, 401, 403, 404, 426, 431), status
