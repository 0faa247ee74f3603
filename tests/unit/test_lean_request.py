"""roomcast's lean request parser returns exactly what websockets' Request.parse returns, or
None (then websockets parses the request itself): never a request websockets would refuse,
never different headers. Checked on hand-picked edge cases and on generated requests, and
through the protocol object the node uses (same 101, same refusals)."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.streams import StreamReader
from websockets.typing import Origin

from roomcast.net.handshake import HandshakeProtocol, lean_request

KEY = base64.b64encode(b"0123456789abcdef")
PLAIN = (
    b"GET /chat?x=1 HTTP/1.1\r\nHost: node:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n"
    b"Origin: https://chat.example\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n"
)


def reference(data: bytes) -> Request | None:
    """websockets' own parse of a request held whole in its buffer (None: it refuses it)."""
    reader = StreamReader()
    reader.feed_data(data)
    parser = Request.parse(reader.read_line)
    try:
        next(parser)
    except StopIteration as done:
        request = done.value
        assert isinstance(request, Request)
        return request
    except Exception:
        return None
    return None  # waits for more data: not a whole request


def same(a: Request, b: Request) -> bool:
    return (a.method, a.path, a.protocol, list(a.headers.raw_items())) == (
        b.method,
        b.path,
        b.protocol,
        list(b.headers.raw_items()),
    )


def check(data: bytes) -> Request | None:
    parsed = lean_request(data)
    if parsed is None:
        return None
    request, length = parsed
    assert data[:length].endswith(b"\r\n\r\n") and b"\r\n\r\n" not in data[: length - 4]
    expected = reference(data)
    assert expected is not None, f"lean parser accepted what websockets refuses: {data!r}"
    assert same(request, expected)
    return request


def test_a_plain_request_is_parsed_as_websockets_does() -> None:
    request = check(PLAIN)
    assert request is not None
    assert request.headers["x-forwarded-for"] == "10.0.0.1"


EDGES = [
    PLAIN.replace(b"Host: ", b"Host:\t \t"),  # whitespace around values
    PLAIN.replace(b"node:8080", b"n\xe9ode"),  # obs-text, decoded as ISO-8859-1
    PLAIN.replace(b"Upgrade: websocket", b"Upgrade: web\rsocket"),  # a CR inside a value
    PLAIN.replace(b"Upgrade: websocket\r\n", b"Upgrade: websocket\n"),  # a bare LF
    PLAIN.replace(b"Host:", b" Host:"),  # obsolete line folding / whitespace before a name
    PLAIN.replace(b"Host:", b"Ho st:"),
    PLAIN.replace(b"Host: node:8080", b"Host"),  # no colon
    PLAIN.replace(b"Host:", b":"),  # empty name
    PLAIN.replace(b"GET /chat?x=1", b"GET /ch\xc3\xa9t"),  # non-ASCII path
    PLAIN.replace(b"GET /chat?x=1", b"GET /a b"),  # a space in the path
    PLAIN.replace(b"GET /chat?x=1 ", b"GET "),  # two parts only
    PLAIN.replace(b"HTTP/1.1", b"HTTP/1.0"),
    PLAIN.replace(b"HTTP/1.1", b"HTTP/2.0"),
    PLAIN.replace(b"GET", b"POST"),  # parsed; process_request refuses the method
    PLAIN.replace(b"\r\n\r\n", b"\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n"),
    PLAIN.replace(b"\r\n\r\n", b"\r\nContent-Length: 5\r\n\r\nhello"),
    PLAIN.replace(b"\r\n\r\n", b"\r\nTransfer-Encoding: chunked\r\n\r\n"),
    PLAIN.replace(b"\r\n\r\n", b"\r\nOrigin: https://other.example\r\n\r\n"),  # repeated
    PLAIN.replace(b"\r\n\r\n", b"\r\nX-Empty:\r\n\r\n"),
    PLAIN.replace(b"\r\n\r\n", b"\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n"),
    PLAIN.replace(b"\r\n\r\n", b"".join(b"\r\nX-%d: v" % i for i in range(200)) + b"\r\n\r\n"),
    PLAIN[:-2],  # not whole yet
    PLAIN + b"\x81\x85",  # the start of a frame right behind the request
]


def test_edge_cases_are_parsed_as_websockets_does_or_left_to_it() -> None:
    accepted = [data for data in EDGES if check(data) is not None]
    # The plain variants are taken; bodies, transfer codings, bad lines are all left out.
    assert PLAIN + b"\x81\x85" in accepted and PLAIN.replace(b"HTTP/1.1", b"HTTP/1.0") in accepted
    for refused in (EDGES[2], EDGES[3], EDGES[4], EDGES[15], EDGES[16], EDGES[19], EDGES[21]):
        assert refused not in accepted


_NAMES = st.sampled_from(["Host", "Origin", "X-A", "x-forwarded-for", "Content-Length", ""]) | (
    st.binary(min_size=0, max_size=6).map(lambda b: b.decode("latin-1"))
)
_VALUES = st.binary(min_size=0, max_size=12).map(lambda b: b.decode("latin-1"))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(_NAMES, st.sampled_from([": ", ":", ":\t", " : "]), _VALUES), max_size=6),
    st.sampled_from([b"GET /chat HTTP/1.1", b"GET /chat HTTP/1.0", b"GET  HTTP/1.1", b"GET /x"]),
)
def test_generated_requests_are_parsed_as_websockets_does_or_left_to_it(
    headers: list[tuple[str, str, str]], line: bytes
) -> None:
    data = line + b"\r\n"
    data += b"".join(f"{n}{sep}{v}\r\n".encode("latin-1") for n, sep, v in headers) + b"\r\n"
    check(data)


def _fed(protocol: ServerProtocol, data: bytes, pieces: int) -> bytes:
    """The 101 ``protocol`` answers ``data`` with, fed in ``pieces``, its Date line left out."""
    step = max(1, len(data) // pieces)
    for start in range(0, len(data), step):
        protocol.receive_data(data[start : start + step])
    events = protocol.events_received()
    assert len(events) == 1 and isinstance(events[0], Request)
    protocol.send_response(protocol.accept(events[0]))
    answer = b"".join(protocol.data_to_send())
    assert answer.startswith(b"HTTP/1.1 101 ")
    return b"\r\n".join(line for line in answer.split(b"\r\n") if not line.startswith(b"Date:"))


def test_the_protocol_answers_as_websockets_whole_or_in_pieces() -> None:
    for pieces in (1, 3):
        ours, theirs = HandshakeProtocol(), ServerProtocol()
        ours.receive_data(PLAIN)
        theirs.receive_data(PLAIN)
        (a,), (b,) = ours.events_received(), theirs.events_received()
        assert isinstance(a, Request) and isinstance(b, Request) and same(a, b)
        assert _fed(HandshakeProtocol(), PLAIN, pieces) == _fed(ServerProtocol(), PLAIN, pieces)


def test_a_refused_request_gets_websockets_own_answer() -> None:
    for data in (EDGES[3], EDGES[15], EDGES[19]):
        ours, theirs = HandshakeProtocol(), ServerProtocol()
        ours.receive_data(data)
        theirs.receive_data(data)
        assert ours.events_received() == theirs.events_received() == []
        assert type(ours.handshake_exc) is type(theirs.handshake_exc)
        assert [b[:12] for b in ours.data_to_send()] == [b[:12] for b in theirs.data_to_send()]


HANDSHAKE_VARIANTS = [
    PLAIN,
    PLAIN.replace(b"Connection: Upgrade", b"Connection: upgrade"),
    PLAIN.replace(b"Connection: Upgrade", b"Connection: keep-alive, Upgrade"),
    PLAIN.replace(b"Connection: Upgrade", b"Connection: keep-alive"),
    PLAIN.replace(b"Connection: Upgrade\r\n", b""),
    PLAIN.replace(b"Upgrade: websocket", b"Upgrade: WebSocket"),
    PLAIN.replace(b"Upgrade: websocket", b"Upgrade: websocket, h2c"),
    PLAIN.replace(b"Upgrade: websocket\r\n", b"Upgrade: websocket\r\nUpgrade: websocket\r\n"),
    PLAIN.replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"),
    PLAIN.replace(b"Sec-WebSocket-Version: 13\r\n", b""),
    PLAIN.replace(KEY, b"c2hvcnQ="),  # 5 bytes
    PLAIN.replace(KEY, b"not base64!"),
    PLAIN.replace(KEY, b"\xe9" * 24),
    PLAIN.replace(KEY + b"\r\n", KEY + b"\r\nSec-WebSocket-Key: " + KEY + b"\r\n"),
    PLAIN.replace(b"HTTP/1.1", b"HTTP/1.0"),
    PLAIN.replace(b"GET", b"PUT"),
    PLAIN.replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Protocol: chat, other\r\n\r\n"),
    PLAIN.replace(b"\r\n\r\n", b"\r\nOrigin: https://chat.example\r\n\r\n"),
    PLAIN.replace(b"\r\n\r\n", b"\r\nOrigin: null\r\n\r\n"),
    PLAIN.replace(
        b"\r\n\r\n", b"\r\nOrigin: https://a.example\r\nOrigin: https://b.example\r\n\r\n"
    ),
]


def _answer(protocol: ServerProtocol, data: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    protocol.receive_data(data)
    (request,) = protocol.events_received()
    assert isinstance(request, Request)
    response = protocol.accept(request)
    headers = [(k, v) for k, v in response.headers.raw_items() if k != "Date"]
    return response.status_code, headers, bytes(response.body)


def test_the_checks_answer_every_variant_as_websockets_does() -> None:
    statuses = set()
    for data in HANDSHAKE_VARIANTS:
        ours, theirs = HandshakeProtocol(), ServerProtocol()
        assert _answer(ours, data) == _answer(theirs, data), data
        assert (ours.origin, ours.extensions, ours.subprotocol) == (
            theirs.origin,
            theirs.extensions,
            theirs.subprotocol,
        )
        statuses.add(_answer(HandshakeProtocol(), data)[0])
    assert statuses >= {101, 400, 426}  # accepted, refused, and a missing upgrade


def test_configured_origins_are_checked_as_websockets_does() -> None:
    # roomcast checks origins itself (origins=None); given some, websockets' own check runs.
    origins: list[Origin | None] = [Origin("https://chat.example")]
    for data in HANDSHAKE_VARIANTS:
        ours, theirs = HandshakeProtocol(origins=origins), ServerProtocol(origins=origins)
        assert _answer(ours, data) == _answer(theirs, data), data
        assert ours.origin == theirs.origin
