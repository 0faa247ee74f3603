"""Red team 19: the memory a compressed WebSocket keeps for its whole life (`ROOMCAST_COMPRESSION`).

permessage-deflate with context takeover keeps a zlib compressor and decompressor per
connection between messages. At zlib's defaults (a 32 KiB window, memLevel 8) the compressor
alone is ~256 KiB, allocated at the handshake and touched by the first large message the
connection is sent, and kept until it closes: one address may hold 256 WebSockets through
nginx. docs/security.md bounds what a client that does not read may pin (the send bound), not
this. Here a few dozen ordinary, compressed members of one room each receive a room's legal
burst of messages; the node's memory per connection must stay near what an uncompressed one
costs, not a deflate state's worth.
"""

from __future__ import annotations

import asyncio
import json
import random
import string
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.adversarial.devcluster_shim import LocalCluster, scaled
from tests.adversarial.observe import rss_bytes
from tests.adversarial.rawws import (
    OP_CLOSE,
    OP_TEXT,
    frame,
    handshake_request,
    open_socket,
    read_head,
)
from tests.adversarial.readiness import until_ready
from tests.adversarial.test_redteam2_deflate_bombs import RSV1, DeflateSocket
from tests.support.attacks import read_server_frame

MEMBERS = 60
SENDERS = 16  # within one client's message burst (40)
TEXT_CHARS = 32 * 1024  # enough to fill a 32 KiB window, well under a frame's 64 KiB
# What the node may keep per compressed connection after its traffic. zlib's defaults kept
# ~314 KiB (4 KiB windows: ~81 KiB); an uncompressed connection keeps ~2 KiB.
MAX_BYTES_PER_CONNECTION = 160 * 1024


@pytest.fixture
def cluster() -> Iterator[Any]:
    with LocalCluster(1, nginx=False, node_env={"ROOMCAST_COMPRESSION": "true"}) as running:
        yield running


def compressed(value: dict[str, Any]) -> bytes:
    """A text frame as permessage-deflate sends it, within the smallest window a server may
    ask for (so it inflates whatever window bits were agreed)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -9)
    body = compressor.compress(json.dumps(value).encode()) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return frame(OP_TEXT, body[:-4], rsv=RSV1)


async def inflated_events(ws: DeflateSocket) -> AsyncIterator[dict[str, Any]]:
    """The node's text frames, inflated and parsed, until its close."""
    while True:
        first, payload = await read_server_frame(ws.reader)
        opcode = first & 0x0F
        if opcode == OP_CLOSE:
            return
        if opcode == OP_TEXT:
            if first & 0x40:
                payload = ws.inflater.decompress(payload + b"\x00\x00\xff\xff")
            yield json.loads(payload)


async def read_until(ws: DeflateSocket, kind: str, count: int = 1) -> int:
    """Read until ``count`` events of type ``kind`` came: how many did (fewer if the node
    closed first)."""
    seen = 0
    async for event in inflated_events(ws):
        seen += event.get("type") == kind
        if seen == count:
            break
    return seen


async def test_compressed_connections_keep_little_memory(cluster: Any) -> None:
    node = cluster.nodes[0]
    await until_ready(node)
    room = f"deflate-{uuid.uuid4().hex[:8]}"
    before = rss_bytes(node.process.pid)
    members = [await DeflateSocket.connect(node.port) for _ in range(MEMBERS)]
    rnd = random.Random(19)
    try:
        for i, ws in enumerate(members):
            ws.writer.write(compressed({"type": "join", "room": room, "username": f"m{i}"}))
        # Every member's join is answered before anyone speaks, so each gets every message.
        for ws in members:
            await asyncio.wait_for(read_until(ws, "joined"), scaled(10))
        for ws in members[:SENDERS]:
            text = "".join(rnd.choices(string.ascii_letters, k=TEXT_CHARS))
            ws.writer.write(compressed({"type": "message", "text": text}))
        counts = await asyncio.wait_for(
            asyncio.gather(*(read_until(ws, "message", SENDERS) for ws in members)), scaled(30)
        )
        after = rss_bytes(node.process.pid)
    finally:
        for ws in members:
            ws.close()
    per_connection = (after - before) / MEMBERS
    figures = (
        f"{MEMBERS} compressed members, {SENDERS} messages of {TEXT_CHARS} characters each: "
        f"node RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB, "
        f"{per_connection / 1024:.0f} KiB per connection; messages read {set(counts)}"
    )
    print(figures)
    assert set(counts) == {SENDERS}, figures
    assert per_connection < MAX_BYTES_PER_CONNECTION, figures


@pytest.mark.parametrize(
    ("offer", "compressed_answer"),
    [
        ("permessage-deflate; client_max_window_bits", True),
        # Without client_max_window_bits the node could not hold the client to a 4 KiB window
        # (it would keep a 32 KiB decompressor): it serves that client uncompressed.
        ("permessage-deflate", False),
    ],
)
async def test_a_client_that_cannot_be_held_to_a_small_window_is_served_uncompressed(
    cluster: Any, offer: str, compressed_answer: bool
) -> None:
    node = cluster.nodes[0]
    await until_ready(node)
    reader, writer = await open_socket("127.0.0.1", node.port)
    try:
        writer.write(
            handshake_request("127.0.0.1", node.port, headers=[("Sec-WebSocket-Extensions", offer)])
        )
        status, head = await read_head(reader)
    finally:
        writer.close()
    assert status == 101, head
    answered = "permessage-deflate" in head.lower()
    assert answered == compressed_answer, head
    if answered:
        assert "server_max_window_bits=12" in head and "client_max_window_bits=12" in head, head
