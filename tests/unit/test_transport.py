"""RateLimiter, Outbox and Connection driven by websockets' sans-I/O client, without sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import orjson
import pytest
from prometheus_client import CollectorRegistry
from websockets.frames import Close, CloseCode, Opcode

from roomcast.core import ratelimit
from roomcast.core.ratelimit import RateLimiter
from roomcast.net import transport as transport_module
from roomcast.net.transport import Outbox, WebSocketServer
from roomcast.runtime.metrics import Metrics
from roomcast.wire.framing import text_frame
from tests.support.wsharness import (
    INSTANCE,
    PEER,
    FakeTransport,
    RecordingApp,
    WsClient,
    make_server,
    make_settings,
    settle,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(ratelimit, "time", fake)
    return fake


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    value: float | None = registry.get_sample_value(name, labels)
    return value


# RateLimiter


def test_rate_limiter_allows_burst_then_refuses(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=10.0, burst=5)
    assert [limiter.allow() for _ in range(5)] == [True] * 5
    assert limiter.strikes == 0
    assert limiter.allow() is False
    assert limiter.strikes == 1
    assert limiter.allow() is False
    assert limiter.strikes == 2


def test_rate_limiter_refills_at_rate(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=2.0, burst=3)
    for _ in range(3):
        assert limiter.allow()
    assert not limiter.allow()
    clock.now += 0.25  # half a token
    assert not limiter.allow()
    clock.now += 0.25  # the other half
    assert limiter.allow()
    assert not limiter.allow()
    clock.now += 1.0  # two tokens
    assert [limiter.allow() for _ in range(3)] == [True, True, False]


def test_rate_limiter_refill_capped_at_burst(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=100.0, burst=4)
    for _ in range(4):
        limiter.allow()
    clock.now += 3600
    assert [limiter.allow() for _ in range(5)] == [True, True, True, True, False]


def test_rate_limiter_flooding_after_more_than_burst_strikes(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=1.0, burst=3)
    for _ in range(3):
        assert limiter.allow()
    for _ in range(3):
        assert not limiter.allow()
        assert not limiter.flooding
    assert limiter.strikes == 3
    assert not limiter.allow()
    assert limiter.strikes == 4
    assert limiter.flooding


def test_rate_limiter_allowed_frame_pays_back_two_strikes(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=1.0, burst=2)
    limiter.allow()
    limiter.allow()
    limiter.allow()
    limiter.allow()
    limiter.allow()
    assert limiter.strikes == 3
    clock.now += 1.0
    assert limiter.allow()
    assert limiter.strikes == 1
    assert not limiter.flooding
    clock.now += 1.0
    assert limiter.allow()
    assert limiter.strikes == 0


def test_rate_limiter_flood_read_slowly_is_still_a_flood(clock: FakeClock) -> None:
    """A flood the node reads slowly gets a token back now and then; it is still closed (a
    reset on every allowed frame let it run for ever)."""
    limiter = RateLimiter(rate=50.0, burst=100)
    frames = 0
    while not limiter.flooding:
        frames += 1
        assert frames < 2_000, "a flood read slowly was never called one"
        limiter.allow()
        clock.now += 0.001  # 1,000 frames/s, 20x the rate, each read a millisecond apart


def test_rate_limiter_three_times_the_rate_is_not_a_flood(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=50.0, burst=100)
    for _ in range(10_000):
        limiter.allow()
        assert not limiter.flooding
        clock.now += 1 / 150


# Handshake


async def test_handshake_on_chat_path_is_accepted(registry: CollectorRegistry) -> None:
    app = RecordingApp()
    server = make_server(app, registry=registry)
    client = WsClient(server)
    assert client.response.status_code == 101
    assert client.response.headers["Upgrade"].lower() == "websocket"
    assert app.calls == [("open", client.conn.id)]
    assert client.conn.opened
    assert not client.conn.closed
    assert client.conn.peer == f"{PEER[0]}:{PEER[1]}"
    assert client.conn.id == f"{INSTANCE}-1"
    assert server.connections == {client.conn}
    assert sample(registry, "roomcast_connections_open") == 1.0
    assert sample(registry, "roomcast_connections_accepted_total") == 1.0
    assert not client.transport.ended


async def test_handshake_with_query_string_is_accepted() -> None:
    app = RecordingApp()
    client = WsClient(make_server(app), path="/chat?token=abc")
    assert client.response.status_code == 101
    assert len(app.opened) == 1


@pytest.mark.parametrize("path", ["/", "/chat/", "/other", "/CHAT", "/chatroom"])
async def test_handshake_on_other_path_is_404(registry: CollectorRegistry, path: str) -> None:
    app = RecordingApp()
    server = make_server(app, registry=registry)
    client = WsClient(server, path=path)
    assert client.response.status_code == 404
    assert client.response.body is not None
    assert b"/chat" in client.response.body
    assert app.calls == []
    assert client.transport.ended
    assert not client.conn.opened
    assert sample(registry, "roomcast_handshakes_rejected_total", status="404") == 1.0
    assert sample(registry, "roomcast_connections_accepted_total") == 0.0
    client.disconnect()
    assert app.calls == []


async def test_connection_ids_are_unique() -> None:
    server = make_server(RecordingApp())
    ids = [WsClient(server).conn.id for _ in range(17)]
    assert ids == [f"{INSTANCE}-{n:x}" for n in range(1, 18)]


async def test_handshake_timeout_aborts(registry: CollectorRegistry) -> None:
    server = make_server(RecordingApp(), registry=registry)
    conn = server._new_connection()
    raw = FakeTransport()
    conn.connection_made(cast(asyncio.BaseTransport, raw))
    conn._handshake_expired()
    assert raw.aborted
    assert sample(registry, "roomcast_handshakes_rejected_total", status="timeout") == 1.0


# Text frames


async def test_text_frames_reach_app_in_order() -> None:
    app = RecordingApp()
    client = WsClient(make_server(app))
    for i in range(5):
        client.send_text(f'{{"n":{i}}}')
    # Several frames in a single read, too.
    for i in range(5, 10):
        client.send_text(f'{{"n":{i}}}', push=False)
    client.push()
    assert app.texts == [f'{{"n":{i}}}' for i in range(10)]
    assert app.rejected == []
    assert client.received() == []


async def test_unicode_text_arrives_unchanged() -> None:
    app = RecordingApp()
    client = WsClient(make_server(app))
    text = '{"type":"message","text":"héllo 😀 \\"q\\" \\n"}'
    client.send_text(text)
    assert app.texts == [text]


async def test_fragmented_message_is_reassembled() -> None:
    app = RecordingApp()
    client = WsClient(make_server(app))
    client.proto.send_text(b'{"type":', fin=False)
    client.proto.send_continuation(b'"typing"', fin=False)
    client.proto.send_continuation(b"}", fin=True)
    client.push()
    assert app.texts == ['{"type":"typing"}']


async def test_fragmented_message_split_inside_utf8_sequence() -> None:
    app = RecordingApp()
    client = WsClient(make_server(app))
    data = "😀".encode()
    client.proto.send_text(data[:2], fin=False)
    client.push()
    client.proto.send_continuation(data[2:], fin=True)
    client.push()
    assert app.texts == ["😀"]


async def test_ping_gets_pong() -> None:
    client = WsClient(make_server(RecordingApp()))
    client.proto.send_ping(b"abcd")
    client.push()
    frames = client.received()
    assert [(f.opcode, bytes(f.data)) for f in frames] == [(Opcode.PONG, b"abcd")]


# Rejections that close the connection


async def test_binary_frame_closes_1003(registry: CollectorRegistry) -> None:
    app = RecordingApp()
    server = make_server(app, registry=registry)
    client = WsClient(server)
    client.send_binary(b"\x00\x01")
    assert client.close_code == 1003
    assert client.close_reason == "binary frames are not supported; send JSON text"
    assert app.rejected == ["binary_frame"]
    assert app.closed == [client.conn]
    assert client.conn.closed
    assert client.transport.ended
    assert app.texts == []
    assert server.connections == set()
    assert sample(registry, "roomcast_connections_open") == 0.0
    # The socket then goes away: on_close is not called a second time.
    client.disconnect()
    assert app.closed == [client.conn]


async def test_unmasked_client_frame_is_protocol_violation() -> None:
    app = RecordingApp()
    client = WsClient(make_server(app))
    client.conn.data_received(text_frame(b'{"type":"typing"}'))  # clients must mask
    assert client.close_code == 1002
    assert app.texts == []
    assert app.rejected == ["protocol_violation"]
    assert app.closed == [client.conn]
    client.disconnect()
    assert app.closed == [client.conn]


def masked(first_byte: int, payload: bytes) -> bytes:
    mask = b"\x11\x22\x33\x44"
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    if len(payload) < 126:
        return bytes((first_byte, 0x80 | len(payload))) + mask + body
    return bytes((first_byte, 0x80 | 126)) + len(payload).to_bytes(2, "big") + mask + body


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (masked(0x88, (1005).to_bytes(2, "big")), 1002),  # a code no endpoint may send
        (masked(0x88, (999).to_bytes(2, "big")), 1002),
        (masked(0x88, (5000).to_bytes(2, "big")), 1002),
        (masked(0x88, b"\x03"), 1002),  # a one-byte close payload
        (masked(0x88, (1000).to_bytes(2, "big") + b"\xff\xfe"), 1007),  # reason not UTF-8
        (masked(0xC1, b"{}"), 1002),  # RSV1 without a negotiated extension
        (masked(0x89, b"x" * 126), 1002),  # control frame over 125 bytes (length 126 form)
        (masked(0x09, b""), 1002),  # a fragmented ping
        (masked(0x83, b""), 1002),  # a reserved opcode
    ],
    ids=["1005", "999", "5000", "short", "bad reason", "rsv1", "long ping", "frag ping", "op 3"],
)
async def test_close_code_and_frame_tricks_end_in_a_clean_close(raw: bytes, code: int) -> None:
    app = RecordingApp()
    client = WsClient(make_server(app))
    client.conn.data_received(raw)
    assert client.close_code == code
    assert app.closed == [client.conn]
    assert app.texts == []


async def test_transport_without_half_close_is_closed() -> None:
    app = RecordingApp()
    server = make_server(app)
    client = WsClient(server)
    client.transport.supports_eof = False
    client.send_binary(b"x")
    assert client.close_code == 1003
    assert client.transport.closed
    assert not client.transport.eof_written


async def test_invalid_utf8_closes_1007() -> None:
    app = RecordingApp()
    client = WsClient(make_server(app))
    client.send_text(b'{"text":"\xff\xfe"}')
    assert client.close_code == 1007
    assert app.rejected == ["invalid_utf8"]
    assert app.texts == []
    assert app.closed == [client.conn]


async def test_invalid_utf8_in_fragmented_message_closes_1007() -> None:
    app = RecordingApp()
    client = WsClient(make_server(app))
    client.proto.send_text(b"ok", fin=False)
    client.proto.send_continuation(b"\xc3", fin=True)  # truncated 2-byte sequence
    client.push()
    assert client.close_code == 1007
    assert app.rejected == ["invalid_utf8"]
    assert app.texts == []


async def test_frame_at_max_size_is_accepted() -> None:
    app = RecordingApp()
    client = WsClient(make_server(app, make_settings(max_frame_bytes=1024)))
    client.send_text(b"x" * 1024)
    assert app.texts == ["x" * 1024]
    assert client.close_code is None


async def test_frame_over_max_size_closes_1009() -> None:
    app = RecordingApp()
    client = WsClient(make_server(app, make_settings(max_frame_bytes=1024)))
    client.send_text(b"x" * 1025)
    assert client.close_code == 1009
    assert app.texts == []
    assert app.rejected == ["frame_too_big"]
    assert client.transport.ended
    client.disconnect()
    assert app.closed == [client.conn]


async def test_fragmented_message_over_max_size_closes_1009() -> None:
    app = RecordingApp()
    client = WsClient(make_server(app, make_settings(max_frame_bytes=1024)))
    client.proto.send_text(b"x" * 600, fin=False)
    client.proto.send_continuation(b"x" * 600, fin=True)
    client.push()
    assert client.close_code == 1009
    assert app.texts == []


async def test_flood_gets_rate_limited_errors_then_1008(clock: FakeClock) -> None:
    app = RecordingApp()
    client = WsClient(make_server(app, make_settings(rate_limit_burst=3)))
    for i in range(3):
        client.send_text(f"ok{i}")
    assert app.texts == ["ok0", "ok1", "ok2"]
    for i in range(3):
        client.send_text(f"over{i}")
    assert app.texts == ["ok0", "ok1", "ok2"]
    assert app.rejected == ["rate_limited"] * 3
    assert client.close_code is None
    client.send_text("one too many")
    frames = client.received()
    assert [f.opcode for f in frames] == [Opcode.TEXT] * 3 + [Opcode.CLOSE]
    for frame in frames[:3]:
        assert orjson.loads(frame.data) == {
            "type": "error",
            "code": "rate_limited",
            "reason": "too many frames; slow down",
        }
    close = Close.parse(bytes(frames[3].data))
    assert close.code == 1008
    assert close.reason == "flood: too many frames"
    assert app.rejected == ["rate_limited"] * 3 + ["flood"]
    assert app.texts == ["ok0", "ok1", "ok2"]
    assert app.closed == [client.conn]


async def test_rate_limited_errors_are_flushed_by_outbox(clock: FakeClock) -> None:
    app = RecordingApp()
    client = WsClient(make_server(app, make_settings(rate_limit_burst=1)))
    client.send_text("a")
    client.send_text("b")
    assert client.events() == []  # queued until the end of the loop turn
    await settle()
    assert client.events() == [
        {"type": "error", "code": "rate_limited", "reason": "too many frames; slow down"}
    ]


async def test_rate_limit_recovers(clock: FakeClock) -> None:
    app = RecordingApp()
    client = WsClient(make_server(app, make_settings(rate_limit_burst=2, rate_limit_per_second=1)))
    for text in ("a", "b", "c"):
        client.send_text(text)
    assert app.texts == ["a", "b"]
    clock.now += 1.0
    client.send_text("d")
    assert app.texts == ["a", "b", "d"]
    assert app.rejected == ["rate_limited"]


async def test_a_message_within_the_frame_budget_is_reassembled(clock: FakeClock) -> None:
    app = RecordingApp()
    client = WsClient(make_server(app, make_settings(rate_limit_burst=7)))
    client.proto.send_text(b"a", fin=False)
    for _ in range(5):
        client.proto.send_continuation(b"b", fin=False)
    client.proto.send_continuation(b"c", fin=True)
    client.push()
    assert app.texts == ["abbbbbc"]
    assert app.rejected == []


@pytest.mark.parametrize("kind", ["continuation", "pong", "ping"])
async def test_every_frame_type_counts_and_a_flood_of_it_closes_1008(
    clock: FakeClock, registry: CollectorRegistry, kind: str
) -> None:
    # Issue 15: millions of empty continuations or pongs were never charged to the bucket.
    app = RecordingApp()
    settings = make_settings(rate_limit_burst=10, rate_limit_per_second=1.0, max_fragments=4096)
    client = WsClient(make_server(app, settings, registry))
    if kind == "continuation":
        client.proto.send_text(b"[", fin=False)
    for _ in range(2000):
        if kind == "continuation":
            client.proto.send_continuation(b"", fin=False)
        elif kind == "pong":
            client.proto.send_pong(b"")
        else:
            client.proto.send_ping(b"")
    client.push()
    assert client.close_code == 1008
    assert app.rejected.count("flood") == 1
    assert app.texts == []
    assert len(app.closed) == 1
    # Parsing stopped soon after the close, not at the end of the read: ~10 errors and the
    # close frame (plus, for pings, the pongs websockets wrote for the last slice parsed).
    slice_of_pings = transport_module._FEED_BYTES // 6 if kind == "ping" else 0
    assert len(client.received()) <= 25 + slice_of_pings


async def test_a_message_that_lost_a_fragment_to_the_limit_is_dropped_whole(
    clock: FakeClock,
) -> None:
    app = RecordingApp()
    client = WsClient(make_server(app, make_settings(rate_limit_burst=3)))
    client.proto.send_text(b'{"type":', fin=False)
    client.proto.send_continuation(b'"typing"', fin=False)
    client.proto.send_continuation(b"", fin=False)  # over the budget: the message is dropped
    client.proto.send_continuation(b"}", fin=True)
    client.push()
    assert app.texts == []
    clock.now += 10
    client.send_text("next")
    assert app.texts == ["next"]
    assert client.close_code is None


async def test_connections_of_one_client_share_a_receive_byte_budget(clock: FakeClock) -> None:
    # Issue 15: many connections of one address, each within its own frame budget.
    app = RecordingApp()
    settings = make_settings(
        client_receive_bytes_per_second=1024,
        client_receive_bytes_burst=10 * 1024,
        max_frame_bytes=4096,
        rate_limit_burst=1000,
    )
    server = make_server(app, settings)
    first, second = WsClient(server), WsClient(server)  # both from 127.0.0.1: one client
    for _ in range(3):
        first.send_text("x" * 2000)  # 3 x (2000 + 1024 overhead)
    for _ in range(3):
        second.send_text("y" * 2000)
    assert len(app.texts) == 3  # the fourth frame of the two together was over
    assert app.rejected == ["rate_limited"] * 3
    # A third connection of the same client gets no fresh budget.
    third = WsClient(server)
    third.send_text("z")
    assert app.rejected[-1] == "rate_limited"
    clock.now += 10  # refilled
    third.send_text("z")
    assert app.texts[-1] == "z"


async def test_refusals_of_the_shared_budget_end_in_1008(clock: FakeClock) -> None:
    app = RecordingApp()
    settings = make_settings(
        client_receive_bytes_per_second=1024, client_receive_bytes_burst=4096,
        max_frame_bytes=1024, rate_limit_burst=20,
    )  # fmt: skip
    client = WsClient(make_server(app, settings))
    for _ in range(30):
        client.send_text("x" * 1000, push=False)
    client.push()
    assert client.close_code == 1008
    assert app.rejected.count("flood") == 1


async def test_too_many_fragments_close_1009(registry: CollectorRegistry) -> None:
    app = RecordingApp()
    settings = make_settings(max_fragments=8, rate_limit_burst=1000)
    client = WsClient(make_server(app, settings, registry))
    client.proto.send_text(b"", fin=False)
    for _ in range(8):
        client.proto.send_continuation(b"", fin=False)
    client.push()
    assert client.close_code == 1009
    assert app.rejected == ["too_many_fragments"]
    assert app.texts == []


async def test_fragments_up_to_the_limit_are_accepted() -> None:
    app = RecordingApp()
    client = WsClient(make_server(app, make_settings(max_fragments=8, rate_limit_burst=1000)))
    client.proto.send_text(b"a", fin=False)
    for _ in range(6):
        client.proto.send_continuation(b"", fin=False)
    client.proto.send_continuation(b"z", fin=True)
    client.push()
    assert app.texts == ["az"]


# Sending and slow consumers


async def test_send_is_flushed_once_per_turn_in_one_write() -> None:
    client = WsClient(make_server(RecordingApp()))
    writes = client.transport.writes
    client.conn.send(b'{"n":1}')
    client.conn.send(b'{"n":2}')
    client.conn.send(b'{"n":3}')
    assert client.transport.writes == writes
    await settle()
    assert client.transport.writes == writes + 1
    assert client.events() == [{"n": 1}, {"n": 2}, {"n": 3}]


async def test_outbox_flush_counts_deliveries(registry: CollectorRegistry) -> None:
    server = make_server(RecordingApp(), registry=registry)
    a, b = WsClient(server), WsClient(server)
    a.conn.send(b'{"to":"a"}')
    b.conn.send(b'{"to":"b1"}')
    b.conn.send(b'{"to":"b2"}')
    server.outbox.flush()
    assert a.events() == [{"to": "a"}]
    assert b.events() == [{"to": "b1"}, {"to": "b2"}]
    assert sample(registry, "roomcast_deliveries_total") == 3.0
    server.outbox.flush()  # nothing pending
    assert sample(registry, "roomcast_deliveries_total") == 3.0


async def test_outbox_fan_out_excludes_one_connection(registry: CollectorRegistry) -> None:
    server = make_server(RecordingApp(), registry=registry)
    clients = [WsClient(server) for _ in range(3)]
    frame = text_frame(b'{"type":"typing"}')
    server.outbox.fan_out([c.conn for c in clients], frame, exclude=clients[1].conn.id)
    server.outbox.flush()
    assert [c.events() for c in clients] == [[{"type": "typing"}], [], [{"type": "typing"}]]
    assert sample(registry, "roomcast_deliveries_total") == 2.0


async def test_outbox_schedules_flush_on_loop() -> None:
    server = make_server(RecordingApp())
    client = WsClient(server)
    outbox = Outbox(asyncio.get_running_loop(), Metrics(CollectorRegistry()))
    outbox.fan_out([client.conn], text_frame(b"{}"), exclude="")
    assert client.events() == []
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert client.events() == [{}]


async def test_write_buffer_at_limit_still_writes() -> None:
    settings = make_settings(send_buffer_bytes=4096)
    client = WsClient(make_server(RecordingApp(), settings))
    payload = b'{"a":1}'
    client.transport.write_buffer_size = 4096 - len(text_frame(payload))
    client.conn.send(payload)
    client.server.outbox.flush()
    assert client.events() == [{"a": 1}]
    assert client.close_code is None


async def test_slow_consumer_closed_1013(registry: CollectorRegistry) -> None:
    app = RecordingApp()
    settings = make_settings(send_buffer_bytes=4096)
    server = make_server(app, settings, registry=registry)
    client = WsClient(server)
    other = WsClient(server)
    client.transport.write_buffer_size = 4096
    client.conn.send(b'{"a":1}')
    other.conn.send(b'{"b":2}')
    server.outbox.flush()
    frames = client.received()
    assert [f.opcode for f in frames] == [Opcode.CLOSE]
    close = Close.parse(bytes(frames[0].data))
    assert close.code == 1013
    assert close.reason == "slow consumer: not reading fast enough"
    assert app.rejected == ["slow_consumer"]
    assert app.closed == [client.conn]
    assert client.conn.closed
    assert sample(registry, "roomcast_slow_consumer_drops_total") == 1.0
    assert sample(registry, "roomcast_deliveries_total") == 1.0  # only `other`
    assert other.events() == [{"b": 2}]
    # No more traffic for it, and on_close stays single when the socket finally goes.
    client.conn.send(b'{"a":2}')
    server.outbox.flush()
    await settle()
    assert client.received() == []
    client.disconnect()
    assert app.closed == [client.conn]
    assert server.connections == {other.conn}


async def test_connection_lost_calls_on_close_once() -> None:
    app = RecordingApp()
    server = make_server(app)
    client = WsClient(server)
    client.disconnect()
    client.disconnect()
    assert app.closed == [client.conn]
    assert server.connections == set()
    client.conn.send(b"{}")
    await settle()
    assert client.transport.written == []


async def test_client_close_handshake() -> None:
    app = RecordingApp()
    client = WsClient(make_server(app))
    client.proto.send_close(CloseCode.NORMAL_CLOSURE, "bye")
    client.push()
    assert client.close_code == 1000
    assert client.transport.ended  # the server closes TCP first
    client.disconnect()
    assert app.closed == [client.conn]


async def test_server_close_sends_pending_frames_first() -> None:
    client = WsClient(make_server(RecordingApp()))
    client.conn.send(b'{"last":true}')
    client.conn.close(CloseCode.GOING_AWAY, "server shutting down")
    frames = client.received()
    assert [f.opcode for f in frames] == [Opcode.TEXT, Opcode.CLOSE]
    assert orjson.loads(frames[0].data) == {"last": True}
    assert Close.parse(bytes(frames[1].data)).code == 1001


async def test_close_with_slow_consumer_pending_does_not_raise() -> None:
    # drain() calls close() on every connection; a client whose buffer is full and who has
    # frames queued this turn must not make close() blow up (and drain() with it).
    app = RecordingApp()
    client = WsClient(make_server(app, make_settings(send_buffer_bytes=4096)))
    client.transport.write_buffer_size = 4096
    client.conn.send(b'{"a":1}')
    client.conn.close(CloseCode.GOING_AWAY, "server shutting down")
    assert client.close_code == 1013
    assert app.rejected == ["slow_consumer"]
    assert app.closed == [client.conn]


async def test_frames_after_fatal_frame_in_same_read_are_ignored() -> None:
    # A binary frame and a text frame arriving in one TCP read: the connection is failed by
    # the first, so the second must not reach the application (the node would act for a
    # connection that already left all its rooms).
    app = RecordingApp()
    client = WsClient(make_server(app))
    client.send_binary(b"\x00", push=False)
    client.send_text('{"type":"join","room":"general","username":"john"}', push=False)
    client.push()
    assert client.close_code == 1003
    assert app.rejected == ["binary_frame"]
    assert app.texts == []
    assert app.calls[-1] == ("close", client.conn.id)


async def test_after_a_flood_close_the_rest_is_read_but_not_parsed(clock: FakeClock) -> None:
    # Lingering close: what a flooding client still sends after our close frame is dropped
    # without parsing (its cost stays bounded), while the socket stays open for reading, so
    # closing it later cannot reset it over unread input and destroy the close frame. The close
    # timer still ends it.
    app = RecordingApp()
    client = WsClient(make_server(app, make_settings(rate_limit_burst=2, close_timeout=0.05)))
    for i in range(10):
        client.send_text(f"m{i}", push=False)
    client.push()
    assert client.close_code == 1008
    parsed: list[bytes | bytearray] = []
    proto = client.conn.proto
    assert proto is not None  # closing: websockets' protocol holds the connection again
    proto.receive_data = parsed.append  # type: ignore[method-assign,assignment]
    for _ in range(100):
        client.conn.data_received(b"\x80\x80\x00\x00\x00\x00" * 1000)
    assert parsed == []
    assert client.transport.eof_written
    assert not client.transport.aborted and not client.transport.closed
    await asyncio.sleep(0.1)  # the close timer (0.05 s) has run
    assert client.transport.aborted


async def test_flood_in_one_read_reports_flood_once(clock: FakeClock) -> None:
    app = RecordingApp()
    client = WsClient(make_server(app, make_settings(rate_limit_burst=2)))
    for i in range(10):
        client.send_text(f"m{i}", push=False)
    client.push()
    assert app.texts == ["m0", "m1"]
    assert app.rejected == ["rate_limited", "rate_limited", "flood"]
    assert client.close_code == 1008


# Busy connections: a frame handler that awaits holds back the client's later frames.


async def test_later_frames_wait_for_pending_handler() -> None:
    app = RecordingApp()
    client = WsClient(make_server(app))
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    app.block["first"] = gate
    client.send_text("first")
    # One frame in flight does not stop reading (that would cost two syscalls per join) ...
    assert not client.transport.paused
    client.send_text("second", push=False)
    client.send_text("third", push=False)
    client.push()
    assert app.texts == ["first"]
    await settle()
    assert app.texts == ["first"]
    gate.set_result(None)
    await settle()
    assert app.texts == ["first", "second", "third"]
    assert client.transport.resume_calls == 0


async def test_a_long_backlog_pauses_reading_until_it_is_handled() -> None:
    app = RecordingApp()
    client = WsClient(make_server(app))
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    app.block["first"] = gate
    client.send_text("first")
    for index in range(20):
        client.send_text(f"n{index}")
    # ... but a client piling frames up behind it is read no further (bounded memory).
    assert client.transport.paused
    gate.set_result(None)
    await settle()
    assert app.texts == ["first", *(f"n{index}" for index in range(20))]
    assert not client.transport.paused
    assert client.transport.resume_calls == 1


async def test_close_while_handler_pending_drops_backlog() -> None:
    app = RecordingApp()
    client = WsClient(make_server(app))
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    app.block["first"] = gate
    client.send_text("first")
    client.send_text("second")
    client.disconnect()
    gate.set_result(None)
    await settle()
    assert app.texts == ["first"]
    assert client.transport.resume_calls == 0
    assert app.closed == [client.conn]


# Keepalive and compression


async def test_heartbeat_pings_then_reaps_silent_connection(registry: CollectorRegistry) -> None:
    server = make_server(RecordingApp(), registry=registry)
    quiet, chatty = WsClient(server), WsClient(server)

    def one_interval() -> None:  # every tick of one heartbeat interval, at once
        for _ in range(server.heartbeat.slices):
            server.heartbeat._fire()

    one_interval()
    assert [f.opcode for f in quiet.received()] == [Opcode.PING]
    assert [f.opcode for f in chatty.received()] == [Opcode.PING]
    assert not quiet.conn.alive
    chatty.push()  # the client library's automatic pong
    assert chatty.conn.alive
    one_interval()
    assert quiet.transport.aborted
    assert not chatty.transport.aborted
    assert sample(registry, "roomcast_dead_connections_reaped_total") == 1.0
    server.heartbeat.stop()


def one_heartbeat_interval(server: WebSocketServer) -> None:
    """Every tick of one heartbeat interval, at once."""
    for _ in range(server.heartbeat.slices):
        server.heartbeat._fire()


async def test_the_pong_answering_a_ping_is_free_and_keeps_the_connection(
    clock: FakeClock, registry: CollectorRegistry
) -> None:
    app = RecordingApp()
    settings = make_settings(rate_limit_burst=3, rate_limit_per_second=1.0)
    server = make_server(app, settings, registry)
    client = WsClient(server)
    for _ in range(3):
        one_heartbeat_interval(server)
        # The client library answered it with a pong, sent alone, as an idle client's pong is.
        assert [f.opcode for f in client.received()] == [Opcode.PING]
        client.push()
        assert client.conn.alive
    assert not client.transport.aborted
    # Three pongs, each answering a ping, took none of the three tokens (the clock is frozen).
    for n in range(3):
        client.send_json({"type": "typing", "n": n})
    assert len(app.texts) == 3
    assert app.rejected == []
    # A fourth pong answers no ping: it is charged like any frame, and there is no token left.
    client.proto.send_pong(b"rc")
    client.push()
    assert app.rejected == ["rate_limited"]
    assert sample(registry, "roomcast_dead_connections_reaped_total") == 0.0
    server.heartbeat.stop()


async def test_lone_pongs_beyond_the_one_a_ping_asked_for_are_a_flood(clock: FakeClock) -> None:
    # What an attacker who read the fast path would try: one pong per read, after a ping.
    app = RecordingApp()
    settings = make_settings(rate_limit_burst=10, rate_limit_per_second=1.0)
    server = make_server(app, settings)
    client = WsClient(server)
    one_heartbeat_interval(server)
    for _ in range(200):
        client.proto.send_pong(b"")
        client.push()
        if client.conn.closed:
            break
    assert client.close_code == 1008
    assert app.rejected.count("flood") == 1
    server.heartbeat.stop()


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (bytes((0x8A, 0x02)) + b"rc", 1002),  # unmasked
        (masked(0x8A, b"x" * 126), 1002),  # over 125 bytes (length 126 form)
        (masked(0xCA, b"rc"), 1002),  # RSV1 without a negotiated extension
        (masked(0x0A, b"rc"), 1002),  # a fragmented pong
    ],
    ids=["unmasked", "long", "rsv1", "fragmented"],
)
async def test_a_malformed_pong_after_a_ping_is_still_a_protocol_error(
    raw: bytes, code: int
) -> None:
    app = RecordingApp()
    server = make_server(app)
    client = WsClient(server)
    one_heartbeat_interval(server)
    client.conn.data_received(raw)
    assert client.close_code == code
    assert app.rejected == ["protocol_violation"]
    assert app.closed == [client.conn]
    server.heartbeat.stop()


async def test_a_pong_sharing_its_read_with_a_message_is_parsed_with_it() -> None:
    app = RecordingApp()
    server = make_server(app)
    client = WsClient(server)
    one_heartbeat_interval(server)
    client.received()
    client.proto.send_pong(b"rc")
    client.send_json({"type": "typing"})  # both in one read
    assert app.texts == ['{"type":"typing"}']
    assert client.conn.alive
    one_heartbeat_interval(server)
    assert not client.transport.aborted
    server.heartbeat.stop()


async def test_heartbeat_ping_never_lands_inside_a_streamed_frame() -> None:
    server = make_server(RecordingApp())
    client = WsClient(server)
    client.received()  # the welcome, if any
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    head, tail = b'{"type":"x","text":"', b'"}'

    async def pieces() -> AsyncIterator[bytes]:
        yield head
        await gate
        yield tail

    streaming = asyncio.create_task(client.conn.send_pieces(len(head + tail), pieces()))
    await settle()
    client.conn.ping()  # mid-frame: held by the protocol until the frame ends
    gate.set_result(None)
    assert await streaming
    frames = client.received()
    assert [f.opcode for f in frames] == [Opcode.TEXT, Opcode.PING]
    assert frames[0].data == head + tail
    client.conn.ping()  # between frames: written at once
    assert [(f.opcode, f.data) for f in client.received()] == [(Opcode.PING, b"rc")]
    server.heartbeat.stop()


async def test_compressed_connection_round_trip() -> None:
    app = RecordingApp()
    server = make_server(app, make_settings(compression=True))
    client = WsClient(server, compress=True)
    assert "permessage-deflate" in client.response.headers["Sec-WebSocket-Extensions"]
    client.send_text('{"type":"typing"}')
    assert app.texts == ['{"type":"typing"}']
    text = "compress me " * 50
    client.conn.send(orjson.dumps({"text": text}))
    server.outbox.fan_out([client.conn], text_frame(b'{"shared":1}'), exclude="")
    server.outbox.flush()
    frames = client.received()
    assert all(f.opcode is Opcode.TEXT for f in frames)
    assert [orjson.loads(f.data) for f in frames] == [{"text": text}, {"shared": 1}]


async def test_uncompressed_server_ignores_client_offer() -> None:
    client = WsClient(make_server(RecordingApp()), compress=True)
    assert client.response.status_code == 101
    assert "Sec-WebSocket-Extensions" not in client.response.headers


async def test_drain_sends_1001_and_waits_for_clients() -> None:
    app = RecordingApp()
    server = make_server(app)
    a, b = WsClient(server), WsClient(server)
    task = asyncio.ensure_future(server.drain(deadline=60))
    await settle()
    assert a.close_code == 1001
    assert b.close_code == 1001
    assert not task.done()
    a.disconnect()
    await settle()
    assert not task.done()
    b.disconnect()
    await asyncio.wait_for(task, 5)
    assert server.connections == set()
    assert not a.transport.aborted
