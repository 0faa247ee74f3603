"""The node parses an open connection's text, ping and pong frames itself (websockets' protocol
is dropped to save memory): attacks on that parser through nginx, against a real node.

A frame header claiming a huge length, sent a byte at a time, must end in 1009 (nothing buffered
towards it); a ping between the fragments of a message is answered and the message delivered;
invalid UTF-8 closes 1007; a client's close is answered with the same code; a close code no
client may send gets 1002. Floods through the node's parser are in test_frame_floods.py."""

from __future__ import annotations

import asyncio

from tests.adversarial.devcluster_shim import scaled
from tests.adversarial.rawws import (
    OP_CONT,
    OP_PING,
    OP_TEXT,
    RawWebSocket,
    close_frame,
    frame,
)


async def trickle(ws: RawWebSocket, data: bytes) -> None:
    """One byte per write, each drained: nginx passes them on in pieces."""
    for byte in data:
        ws.send_bytes(bytes([byte]))
        await ws.drain()


async def wait_for_pong(ws: RawWebSocket, payload: bytes) -> None:
    got = ws.received
    async with asyncio.timeout(scaled(10)):
        while payload not in got.pongs:
            assert not got.ended.is_set(), f"closed ({got.close_code}) before the pong"
            got.arrived.clear()
            await got.arrived.wait()


async def test_huge_claimed_length_byte_by_byte_is_refused_1009(cluster: object) -> None:
    ws = await RawWebSocket.connect("127.0.0.1", cluster.nginx_port)  # type: ignore[attr-defined]
    try:
        await trickle(ws, frame(OP_TEXT, b"", declared_length=1 << 40)[:14])
        assert await ws.wait_closed() == 1009
    finally:
        await ws.close()


async def test_a_16_bit_length_trickled_then_completed_is_delivered(cluster: object) -> None:
    # Held by the node's parser (at most one frame under the limit), then handled as usual.
    ws = await RawWebSocket.connect("127.0.0.1", cluster.nginx_port)  # type: ignore[attr-defined]
    try:
        data = frame(OP_TEXT, b"x" * 300)  # not JSON: answered with an error event
        await trickle(ws, data[:40])
        ws.send_bytes(data[40:])
        error = await ws.next_text(type="error")
        assert ws.received.close_code is None, error
    finally:
        await ws.close()


async def test_ping_between_fragments_is_answered_and_the_message_delivered(
    cluster: object,
) -> None:
    ws = await RawWebSocket.connect("127.0.0.1", cluster.nginx_port)  # type: ignore[attr-defined]
    try:
        ws.send_bytes(frame(OP_TEXT, b"not", fin=False) + frame(OP_PING, b"between"))
        await wait_for_pong(ws, b"between")
        ws.send_bytes(frame(OP_CONT, b" json", fin=True))
        await ws.next_text(type="error")  # the whole message arrived, and was not JSON
        ws.send_bytes(frame(OP_PING, b"after"))
        await wait_for_pong(ws, b"after")
        assert ws.received.close_code is None
    finally:
        await ws.close()


async def test_invalid_utf8_text_is_closed_1007(cluster: object) -> None:
    ws = await RawWebSocket.connect("127.0.0.1", cluster.nginx_port)  # type: ignore[attr-defined]
    try:
        ws.send_bytes(frame(OP_TEXT, b'{"type":"\xff"}'))
        assert await ws.wait_closed() == 1007
    finally:
        await ws.close()


async def test_client_close_is_answered_with_its_code(cluster: object) -> None:
    ws = await RawWebSocket.connect("127.0.0.1", cluster.nginx_port)  # type: ignore[attr-defined]
    try:
        ws.send_bytes(frame(OP_PING, b"first") + close_frame(4321, b"bye"))
        assert await ws.wait_closed() == 4321
        assert ws.received.pongs == [b"first"]
    finally:
        await ws.close()


async def test_a_close_code_no_client_may_send_is_a_protocol_error(cluster: object) -> None:
    ws = await RawWebSocket.connect("127.0.0.1", cluster.nginx_port)  # type: ignore[attr-defined]
    try:
        ws.send_bytes(close_frame(1005))
        assert await ws.wait_closed() == 1002
    finally:
        await ws.close()
