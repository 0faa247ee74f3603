"""Red team 9: `presence` requests over WebSockets, from one client reading as fast as it can.

docs/security.md bounds what one client may make the node read from history (4 MiB/s, 8 MiB,
over all nodes, WebSocket `history` and HTTP history together), because a ~60-byte request
was answered with up to 2 MiB. A `presence` request is the same shape: ~40 bytes, answered with
the room's whole member list (a room below the big-room size, 500 connections, is read from
Redis afresh each time; a big room's page holds up to 1,000 names), and only the frame rate
(50/s per connection) bounded it. 16 connections of one address asking the presence of a room
of 400 members with 60-character names (~27 KB an answer) made one node send 78-83 MiB in 4 s.

Now a presence answer is charged to the same per-client budget as history answers (its bytes +
1 KiB): a client that owes is refused `rate_limited` before anything is read. The answers a
member needs (one after its join, a 10,000-member room paged through) are kilobytes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from tests.adversarial.bursts import join
from tests.adversarial.bystander import BystanderProbe
from tests.adversarial.observe import MIB, cpu_seconds, redis_command
from tests.adversarial.rawws import RawWebSocket, handshake_request, open_socket, read_head, text

MEMBERS = 400  # below the big-room size (500): read from Redis for every request
NAME_CHARS = 32  # the longest username
READERS = 16  # connections of one address, straight to the node
WINDOW_S = 4.0
REQUESTS_PER_TICK, TICK_S = 5, 0.1  # 50 presence requests/s each: the frame rate
# The history budget's burst and rate over the window: 8 + 4 x 4 = 24 MiB. Bounded at 40 MiB
# (before: 78-83 MiB in 4 s).
PRESENCE_BYTES_FROM_ONE_CLIENT = 40 * MIB
ATTACKER = "203.0.113.90"


async def populate(port: int, room: str) -> list[RawWebSocket]:
    """MEMBERS members with long names, from four other addresses."""
    members = []
    for index in range(MEMBERS):
        address = f"198.51.100.{60 + index % 4}"
        ws = await RawWebSocket.connect(
            "127.0.0.1", port, headers=[("X-Forwarded-For", address)], rcvbuf=1 << 16
        )
        await join(ws, room, f"m{index:04d}" + "x" * (NAME_CHARS - 5))
        members.append(ws)
    return members


async def ask_presence_hard(port: int, room: str, deadline: float, received: list[int]) -> None:
    """Join, then ask for the room's presence at the frame rate, reading every byte."""
    reader, writer = await open_socket("127.0.0.1", port)
    writer.write(handshake_request("127.0.0.1", port, headers=[("X-Forwarded-For", ATTACKER)]))
    status, head = await read_head(reader)
    assert status == 101, head
    writer.write(text({"type": "join", "room": room, "username": "reader"}))

    async def drop() -> None:
        while chunk := await reader.read(1 << 20):
            received.append(len(chunk))

    dropping = asyncio.ensure_future(drop())
    request = text({"type": "presence", "room": room}) * REQUESTS_PER_TICK
    try:
        while time.monotonic() < deadline and not dropping.done():
            writer.write(request)
            await writer.drain()
            await asyncio.sleep(TICK_S)
    finally:
        writer.close()
        dropping.cancel()


def redis_cpu_seconds(port: int) -> float:
    info: str = redis_command(port, "INFO", "cpu")
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    return float(fields["used_cpu_sys"]) + float(fields["used_cpu_user"])


async def test_one_client_cannot_make_the_node_send_presence_without_end(
    cluster: Any, probe: BystanderProbe
) -> None:
    node = cluster.nodes[0]
    room = f"crowd-{uuid.uuid4().hex[:8]}"
    members = await populate(node.port, room)
    try:
        received: list[int] = []
        node_before = cpu_seconds(node.process.pid)
        redis_before = redis_cpu_seconds(cluster.redis_port)
        with probe.on(node) as bystander:
            deadline = time.monotonic() + WINDOW_S
            await asyncio.gather(
                *(ask_presence_hard(node.port, room, deadline, received) for _ in range(READERS))
            )
    finally:
        for ws in members:
            await ws.close()
    node_spent = cpu_seconds(node.process.pid) - node_before
    redis_spent = redis_cpu_seconds(cluster.redis_port) - redis_before
    got = sum(received)
    figures = (
        f"{READERS} connections of one address asking the presence of a room of {MEMBERS} "
        f"members at the frame rate for {WINDOW_S:.0f} s: {got / MIB:.0f} MiB sent "
        f"(bound {PRESENCE_BYTES_FROM_ONE_CLIENT / MIB:.0f}); node CPU {node_spent:.2f} s, "
        f"Redis CPU {redis_spent:.2f} s"
    )
    print(figures, bystander[0].describe())
    assert got <= PRESENCE_BYTES_FROM_ONE_CLIENT, figures
    BystanderProbe.assert_fast(bystander, "presence reads from one address")
