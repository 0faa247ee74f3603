"""Red team 2: pings on connections the node does not parse itself.

docs/security.md: "Pings are answered once per read, for the last ping the client could afford
(RFC 6455 5.5.3)", and a refused frame "gets a `rate_limited` error". That holds where the node
parses frames itself (uncompressed connections that only ever sent final text, ping and pong
frames). A connection that negotiated permessage-deflate, or that once sent anything else (a
fragmented message, a 64-bit length), is parsed by websockets from then on, and websockets
answers every ping it parses with a pong of its own, the refused ones too: the ping flood the
node was hardened against (a pong per 6-byte ping) is back for any client that asks for
compression or sends one fragmented message first.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from tests.adversarial.devcluster_shim import LocalCluster, scaled
from tests.adversarial.rawws import (
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    close_frame,
    frame,
    handshake_request,
    open_socket,
    read_head,
)
from tests.support.attacks import read_server_frame

AFFORDABLE, OVER = 80, 140  # pings in one write: within the burst (100), and 40 over it
# A write of a few KiB is one read or two on loopback; allow some more.
MAX_PONGS = 4


@pytest.fixture(scope="module")
def node() -> Iterator[Any]:
    with LocalCluster(1, redis=False, nginx=False, node_env={"ROOMCAST_COMPRESSION": "true"}) as c:
        yield c.nodes[0]


async def pongs_for_pings(port: int, path: str, pings: int) -> tuple[int, int]:
    """Open a connection the ``path`` way, send ``pings`` pings and a close in one write, read
    until the node's close: (pongs, text frames) received after the pings."""
    reader, writer = await open_socket("127.0.0.1", port)
    headers = []
    if path == "compressed":
        # As browsers offer it (without client_max_window_bits the node does not compress).
        headers = [("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")]
    writer.write(handshake_request("127.0.0.1", port, headers=headers))
    status, head = await read_head(reader)
    assert status == 101, head
    assert ("permessage-deflate" in head.lower()) == (path == "compressed"), head

    async def next_frame() -> tuple[int, bytes]:
        first, payload = await read_server_frame(reader)
        return first & 0x0F, payload

    try:
        async with asyncio.timeout(scaled(10)):
            assert (await next_frame())[0] == OP_TEXT  # the welcome
            if path == "handed over":
                # One fragmented message (refused: not JSON); websockets parses from then on.
                writer.write(frame(OP_TEXT, b"{", fin=False) + frame(OP_CONT, b"}"))
                assert (await next_frame())[0] == OP_TEXT  # its error
            writer.write(
                b"".join(frame(OP_PING, struct.pack("!I", i)) for i in range(pings))
                + close_frame(1000)
            )
            pongs = texts = 0
            while True:
                opcode, _ = await next_frame()
                if opcode == OP_CLOSE:
                    return pongs, texts
                pongs += opcode == OP_PONG
                texts += opcode == OP_TEXT
    finally:
        writer.close()


@pytest.mark.parametrize("path", ["own parser", "handed over", "compressed"])
async def test_a_ping_flood_gets_a_pong_per_read_whoever_parses_it(node: Any, path: str) -> None:
    affordable = await pongs_for_pings(node.port, path, AFFORDABLE)
    over = await pongs_for_pings(node.port, path, OVER)
    figures = (
        f"{path}: {AFFORDABLE} pings in one write -> {affordable[0]} pongs; {OVER} pings "
        f"(burst 100) -> {over[0]} pongs"
    )
    print(figures)
    assert affordable[0] <= MAX_PONGS, figures
    assert 1 <= over[0] <= MAX_PONGS, figures
