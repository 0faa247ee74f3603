"""Red team 2: decompression bombs on a node with permessage-deflate on (`ROOMCAST_COMPRESSION`).

docs/security.md: "bytes per message `ROOMCAST_MAX_FRAME_BYTES` | 64 KiB (then 1009), over all
its fragments". With compression, what is bounded must be the inflated message, not the bytes
on the wire: 16 MiB of zeros deflate to 16 KiB, so a node that inflated first and checked after
would hold 16 MiB per frame (and a thousand connections, 16 GiB). Each attack below must end in
a 1009 close with the node's peak memory barely moved, and a member of the same node served
throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.adversarial.devcluster_shim import LocalCluster, scaled
from tests.adversarial.rawws import (
    OP_CLOSE,
    OP_CONT,
    OP_TEXT,
    RawWebSocket,
    frame,
    handshake_request,
    open_socket,
    read_head,
)
from tests.adversarial.readiness import until_ready
from tests.support.attacks import read_server_frame

MAX_FRAME_BYTES = 64 * 1024  # the shipped default
BOMB_BYTES = 16 * 1024 * 1024  # inflated size of one bomb
# What the node's peak RSS may grow by over all the bombs: a few frames' worth, not a bomb's.
PEAK_GROWTH_BYTES = 8 * 1024 * 1024
RSV1 = 0x4  # "compressed" (RFC 7692 §6)


@pytest.fixture
def cluster() -> Iterator[Any]:
    with LocalCluster(1, nginx=False, node_env={"ROOMCAST_COMPRESSION": "true"}) as running:
        yield running


def deflate(data: bytes) -> bytes:
    """A message's payload as permessage-deflate sends it (raw deflate, tail stripped)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert body.endswith(b"\x00\x00\xff\xff")
    return body[:-4]


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


class DeflateSocket:
    """A client that negotiated permessage-deflate; reads until the server's close frame."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.inflater = zlib.decompressobj(-15)
        self.texts: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, port: int) -> DeflateSocket:
        reader, writer = await open_socket("127.0.0.1", port)
        offer = [("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")]
        writer.write(handshake_request("127.0.0.1", port, headers=offer))
        status, head = await read_head(reader)
        assert status == 101, head
        assert "permessage-deflate" in head.lower(), head
        return cls(reader, writer)

    async def close_code(self, timeout: float = 10, ack: int | None = None) -> int | None:
        """Read (and inflate) frames until the server's close: its code; None if it just ended
        (or, given ``ack``, once that ack came)."""
        async with asyncio.timeout(scaled(timeout)):
            try:
                while True:
                    first, payload = await read_server_frame(self.reader)
                    opcode = first & 0x0F
                    if opcode == OP_CLOSE:
                        return int(struct.unpack("!H", payload[:2])[0]) if payload else None
                    if opcode == OP_TEXT:
                        if first & 0x40:
                            payload = self.inflater.decompress(payload + b"\x00\x00\xff\xff")
                        self.texts.append(json.loads(payload))
                        last = self.texts[-1]
                        if ack is not None and (last.get("type"), last.get("id")) == ("ack", ack):
                            return None
            except (asyncio.IncompleteReadError, ConnectionError):
                return None

    def close(self) -> None:
        self.writer.close()


async def attack(port: int, frames: list[bytes]) -> tuple[int | None, list[dict[str, Any]]]:
    ws = await DeflateSocket.connect(port)
    try:
        ws.writer.write(b"".join(frames))
        with contextlib.suppress(ConnectionError):
            await ws.writer.drain()
        return await ws.close_code(), ws.texts
    finally:
        ws.close()


async def test_deflate_bombs_are_closed_1009_without_inflating(cluster: Any) -> None:
    node = cluster.nodes[0]
    await until_ready(node)
    room = f"bomb-{uuid.uuid4().hex[:8]}"
    member = await RawWebSocket.connect("127.0.0.1", node.port)
    try:
        await member.send({"type": "join", "room": room, "username": "member"})
        await member.next_text(type="joined", room=room)
        before = peak_rss(node.process.pid)
        zeros = deflate(b" " * BOMB_BYTES)  # whitespace: even valid JSON padding
        # One frame inflating to 16 MiB.
        single = frame(OP_TEXT, zeros, rsv=RSV1)
        # A message in 64 fragments (the most allowed), the first compressed, each inflating
        # to under the limit, together 64 times it (RFC 7692: RSV1 on the first frame only).
        piece = b" " * (MAX_FRAME_BYTES - 1)
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        parts = [
            compressor.compress(piece) + compressor.flush(zlib.Z_SYNC_FLUSH) for _ in range(64)
        ]
        parts[-1] = parts[-1][:-4]
        fragmented = [
            frame(OP_TEXT if i == 0 else OP_CONT, part, fin=i == 63, rsv=RSV1 if i == 0 else 0)
            for i, part in enumerate(parts)
        ]
        # A valid JSON message whose text, inflated, is just over the limit.
        over = json.dumps({"type": "message", "text": "x" * MAX_FRAME_BYTES}).encode()
        just_over = frame(OP_TEXT, deflate(over), rsv=RSV1)
        codes = [
            (await attack(node.port, frames))[0]
            for frames in ([single], fragmented, [just_over], [single] * 20)
        ]
        grown = peak_rss(node.process.pid) - before
        # The member on the same node is served throughout.
        await member.send({"type": "message", "text": "still served", "id": 1})
        await member.next_text(type="ack", id=1)
        await member.next_text(type="message", text="still served")
    finally:
        await member.close()
    figures = (
        f"bombs of {len(zeros)} wire bytes inflating to {BOMB_BYTES} (and 64 fragments of "
        f"{MAX_FRAME_BYTES - 1}, a message just over {MAX_FRAME_BYTES}, 20 bombs in a row): "
        f"close codes {codes}; node peak RSS grew {grown / 2**20:.1f} MiB"
    )
    print(figures)
    assert codes == [1009, 1009, 1009, 1009], figures
    assert grown < PEAK_GROWTH_BYTES, figures


async def test_a_compressed_message_within_the_limit_is_delivered(cluster: Any) -> None:
    """The bound is not a blanket refusal: a compressed join and message go through."""
    node = cluster.nodes[0]
    await until_ready(node)
    room = f"fits-{uuid.uuid4().hex[:8]}"
    ws = await DeflateSocket.connect(node.port)
    try:
        join = json.dumps({"type": "join", "room": room, "username": "packer"}).encode()
        ws.writer.write(frame(OP_TEXT, deflate(join), rsv=RSV1))
        text = "y" * 4000
        message = json.dumps({"type": "message", "text": text, "id": 7}).encode()
        ws.writer.write(frame(OP_TEXT, deflate(message), rsv=RSV1))
        await ws.close_code(ack=7)
    finally:
        ws.close()
    kinds = [(t.get("type"), t.get("id")) for t in ws.texts]
    assert ("ack", 7) in kinds, kinds
