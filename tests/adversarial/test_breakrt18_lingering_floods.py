"""A client that ends its connection, then floods bytes while the node lingers on it.

After a WebSocket client's close (or a refused API request) the node half-closes and reads and
drops what the client still sends until it ends its side, for at most ROOMCAST_CLOSE_TIMEOUT
(5 s), so the echo or the refusal is not reset away. What is read there was charged to nothing:
the client's receive budget (ROOMCAST_CLIENT_RECEIVE_BYTES_PER_SECOND) bounds what it makes the
node read while the connection is open, not after. Past it the node now reads nothing more
until the timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from typing import Any

from tests.adversarial.devcluster_shim import scaled
from tests.adversarial.httpraw import request_bytes
from tests.adversarial.observe import cpu_seconds
from tests.adversarial.rawws import RawWebSocket, close_frame, open_socket

CONNECTIONS = 4  # each from an address of its own
CHUNK = b"\x00" * 65536
MB = 1_000_000
# What one connection may make the node read while it lingers: the client's receive budget
# (3 MiB burst, 1.5 MiB/s over the 5 s close timeout), plus the kernel's buffers on both sides,
# which the client counts as sent (~10 MB on loopback). On main: ~580 MB each.
SENT_PER_CONNECTION_MB = 32
# The node's CPU for the four: on main ~1.2 s (and only the client's own speed bounded it).
NODE_CPU_S = 0.3
_addresses = itertools.count(1)


def fresh_address() -> str:
    return f"127.182.{next(_addresses)}.1"


async def flood(writer: asyncio.StreamWriter, deadline: float) -> int:
    """Write until the node ends the connection or the deadline: the bytes that left."""
    sent = 0
    with contextlib.suppress(ConnectionError, OSError, RuntimeError, TimeoutError):
        while time.monotonic() < deadline and not writer.is_closing():
            writer.write(CHUNK)
            await asyncio.wait_for(writer.drain(), max(0.01, deadline - time.monotonic()))
            sent += len(CHUNK)
    return sent


async def closed_then_flooding(port: int, deadline: float) -> int:
    ws = await RawWebSocket.connect("127.0.0.1", port, source=fresh_address())
    try:
        ws.send_bytes(close_frame(1000))
        await ws.wait_closed()
        return await flood(ws.writer, deadline)
    finally:
        ws.writer.close()


async def refused_then_flooding(port: int, deadline: float, source: str | None = None) -> int:
    """A post refused 413, then a flood; from ``source``, or an address of its own."""
    reader, writer = await open_socket("127.0.0.1", port, source=source or fresh_address())
    try:
        headers = [("Content-Length", str(10**12))]
        writer.write(request_bytes("POST", "/api/rooms/a/messages", "roomcast", headers))
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), scaled(10))
        return await flood(writer, deadline)
    finally:
        writer.close()


async def measure(cluster: Any, attack: Any) -> tuple[int, float]:
    node = cluster.nodes[0]
    before = cpu_seconds(node.process.pid)
    deadline = time.monotonic() + scaled(8)
    sent = await asyncio.gather(*(attack(node.port, deadline) for _ in range(CONNECTIONS)))
    return sum(sent), cpu_seconds(node.process.pid) - before


async def check(cluster: Any, attack: Any, what: str) -> None:
    sent, spent = await measure(cluster, attack)
    figures = (
        f"{CONNECTIONS} {what} flooding while the node lingers: {sent / MB:.0f} MB sent, "
        f"{sent / MB / CONNECTIONS:.0f} MB a connection (bound {SENT_PER_CONNECTION_MB}), "
        f"the node's CPU {spent:.2f} s (bound {NODE_CPU_S})"
    )
    print(figures)
    assert sent / MB / CONNECTIONS < SENT_PER_CONNECTION_MB, figures
    assert spent < NODE_CPU_S, figures


async def test_a_closed_websocket_flooding_costs_the_node_little(cluster: Any) -> None:
    await check(cluster, closed_then_flooding, "closed WebSockets")


async def test_a_refused_request_flooding_costs_the_node_little(cluster: Any) -> None:
    await check(cluster, refused_then_flooding, "refused API requests")
