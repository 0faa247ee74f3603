"""An open connection without websockets' protocol: the node parses final text, ping and pong
frames itself and hands anything else back to websockets, with the same results."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import cast

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from roomcast.core.auth import Identity
from roomcast.core.hooks import Hooks
from roomcast.net.transport import PING_PAYLOAD, Connection
from tests.support.wsharness import FakeTransport, RecordingApp, WsClient, make_server, settle


def masked(opcode: Opcode, payload: bytes, *, fin: bool = True) -> bytes:
    return Frame(opcode, payload, fin=fin).serialize(mask=True, extensions=[])


def frames_from(client_proto: ClientProtocol, data: bytes) -> list[Frame | Response]:
    client_proto.receive_data(data)
    return [e for e in client_proto.events_received() if isinstance(e, Frame | Response)]


async def test_open_connection_holds_no_websockets_protocol() -> None:
    app = RecordingApp()
    client = WsClient(make_server(app))
    conn = client.conn
    assert conn.proto is None
    client.send_text("hello")
    assert app.texts == ["hello"]
    assert conn.proto is None
    assert conn._inbuf is None and conn._backlog is None and conn._deferred is None
    assert conn._send is not None and conn._send._held is None


MIXED = [
    (Opcode.TEXT, b"short"),
    (Opcode.PING, b"p1"),
    (Opcode.TEXT, "é".encode() * 150),  # 300 bytes: a 16-bit length
    (Opcode.PONG, b""),
    (Opcode.TEXT, b""),
    (Opcode.TEXT, b"x" * 125),
    (Opcode.TEXT, b"y" * 126),
]


def expected_texts() -> list[str]:
    return [p.decode() for op, p in MIXED if op is Opcode.TEXT]


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 64, 10_000])
async def test_frames_in_any_pieces(piece: int) -> None:
    app = RecordingApp()
    client = WsClient(make_server(app))
    stream = b"".join(masked(op, payload) for op, payload in MIXED)
    for start in range(0, len(stream), piece):
        client.conn.data_received(stream[start : start + piece])
    assert app.texts == expected_texts()
    assert [(f.opcode, bytes(f.data)) for f in client.received()] == [(Opcode.PONG, b"p1")]
    assert client.conn.proto is None and client.conn._inbuf is None


async def test_frames_in_the_same_read_as_the_request() -> None:
    # A client that does not wait for the 101: its frames come after the response, whatever
    # the read boundaries (the request's end is found across reads too).
    cut = 0
    while True:
        cut += 1
        client = ClientProtocol(parse_uri("ws://testserver/chat"))
        client.send_request(client.connect())
        request = b"".join(client.data_to_send())
        stream = request + masked(Opcode.TEXT, b"first") + masked(Opcode.PING, b"pp")
        if cut >= len(stream):
            break
        app = RecordingApp()
        server = make_server(app)
        transport = FakeTransport()
        conn: Connection = server._new_connection()
        conn.connection_made(cast(asyncio.BaseTransport, transport))
        conn.data_received(stream[:cut])
        conn.data_received(stream[cut:])
        assert app.texts == ["first"], cut
        events = frames_from(client, transport.take())
        assert isinstance(events[0], Response) and events[0].status_code == 101, cut
        assert [(f.opcode, bytes(f.data)) for f in events[1:] if isinstance(f, Frame)] == [
            (Opcode.PONG, b"pp")
        ], cut
        assert conn.proto is None, cut


async def test_fragments_go_back_to_websockets_from_a_frame_boundary() -> None:
    app = RecordingApp()
    client = WsClient(make_server(app))
    stream = (
        masked(Opcode.TEXT, b"before")
        + masked(Opcode.TEXT, b'{"a":', fin=False)
        + masked(Opcode.CONT, b"1}")
        + masked(Opcode.TEXT, b"after")
    )
    client.conn.data_received(stream[:3])  # a partial first frame waits in the node
    client.conn.data_received(stream[3:])
    assert app.texts == ["before", '{"a":1}', "after"]
    assert client.conn.proto is not None  # websockets keeps it from then on
    client.send_text("later")
    assert app.texts[-1] == "later"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (bytes([0x81, 0x05]) + b"hello", 1002),  # unmasked
        (bytes([0xC1, 0x80, 0, 0, 0, 0]), 1002),  # a reserved bit
        (bytes([0x89, 0xFE, 0x00, 0x7E]) + bytes(4) + bytes(126), 1002),  # control > 125
        (bytes([0x8B, 0x80]) + bytes(4), 1002),  # an unknown opcode
    ],
)
async def test_bad_frames_are_refused_by_websockets(frame: bytes, code: int) -> None:
    app = RecordingApp()
    client = WsClient(make_server(app))
    client.conn.data_received(frame)
    assert client.close_code == code
    assert app.rejected == ["protocol_violation"]
    assert app.calls[-1] == ("close", client.conn.id)


async def test_server_close_with_a_partial_frame_waiting() -> None:
    app = RecordingApp()
    client = WsClient(make_server(app))
    frame = masked(Opcode.TEXT, b"half of it")
    client.conn.data_received(frame[:5])
    client.conn.close(1001, "going away")
    assert client.close_code == 1001
    # Not handled: published now, it could not be answered, as the client has our close first
    # (a message without an answer at a 1001 was never published, so it may be sent again).
    client.conn.data_received(frame[5:])
    assert app.texts == []


async def test_heartbeat_ping_and_the_clients_pong() -> None:
    client = WsClient(make_server(RecordingApp()))
    client.conn.alive = False
    client.conn.ping()
    frames = client.received()
    assert [f.opcode for f in frames] == [Opcode.PING] and frames[0].data == PING_PAYLOAD
    client.push()  # the client protocol answered the ping with a pong
    assert client.conn.alive
    assert client.conn.proto is None


async def test_end_of_stream_leaves_at_once() -> None:
    app = RecordingApp()
    client = WsClient(make_server(app))
    assert client.conn.eof_received() is False
    assert client.transport.eof_written
    assert app.calls[-1] == ("close", client.conn.id)
    client.disconnect()
    assert [c for c in app.calls if c[0] == "close"] == [("close", client.conn.id)]


class DecidingHook:
    """A connect hook whose answer the test gives (what Hooks offers the transport)."""

    authenticates = True

    def __init__(self) -> None:
        self.answer: asyncio.Future[Identity] = asyncio.get_running_loop().create_future()

    async def connect(self, client_address: str, path: str, headers: Mapping[str, str]) -> Identity:
        return await self.answer


@pytest.mark.parametrize("early", [b"", masked(Opcode.TEXT, b"too early")])
async def test_connect_hook_decides_then_frames_flow(early: bytes) -> None:
    # Frames sent before the hook's answer are dropped (as before); after it, frames flow,
    # parsed by the node when nothing came early, by websockets otherwise.
    app = RecordingApp()
    hook = DecidingHook()
    server = make_server(app)
    server.hooks = cast(Hooks, hook)
    client = ClientProtocol(parse_uri("ws://testserver/chat"))
    client.send_request(client.connect())
    transport = FakeTransport()
    conn: Connection = server._new_connection()
    conn.connection_made(cast(asyncio.BaseTransport, transport))
    conn.data_received(b"".join(client.data_to_send()) + early)
    assert transport.paused
    hook.answer.set_result(Identity("s", "sam", None))
    await settle()
    events = frames_from(client, transport.take())
    assert isinstance(events[0], Response) and events[0].status_code == 101
    assert (conn.proto is None) == (not early)
    client.send_text(b"hello")
    conn.data_received(b"".join(client.data_to_send()))
    assert app.texts == ["hello"]
