"""Red team 3: `history` requests over WebSockets, from one client reading as fast as it can.

docs/security.md bounds what a client sends (frames, bytes, messages) and what a reader that
does not read may pin, but not what a reader that reads may make the node and Redis read for it.
A `history` request is a ~60-byte frame; its answer is the room's whole history, up to
`ROOMCAST_HISTORY_BYTES` (2 MiB), read from Redis page by page (and once more to announce its
length). The HTTP API limits such requests per caller (`ROOMCAST_API_RATE_*`); over a WebSocket
only the frame rate (50/s per connection) applied: 16 connections of one address asking for the
history of a full room made a lone node send 440 MB in 5 s and kept Redis busy 3.2 s of those 5
(Redis is every node's: all rooms' messages wait behind those reads); in the cluster below, a
bystander's round trip went to 139 ms (p50) and 980 ms (p99).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from tests.adversarial.bursts import burst, join
from tests.adversarial.bystander import BystanderProbe
from tests.adversarial.devcluster_shim import scaled
from tests.adversarial.httpraw import http
from tests.adversarial.observe import MIB, redis_command
from tests.adversarial.rawws import RawWebSocket, open_socket, text
from tests.adversarial.readers import Reader

READERS = 16  # connections of one address, straight to the node
WINDOW_S = 4.0
REQUESTS_PER_TICK, TICK_S = 5, 0.1  # 50 history requests/s each: the frame rate
# HTTP history requests of one address through nginx (spread over the 3 nodes) in the window,
# 10 every 100 ms: over the API rate (20/s, 40 per node), which refuses the rest with 429.
HTTP_REQUESTS_PER_TICK = 10
# What one client may read over HTTP in the window: its burst and rate over all nodes, each node
# admitting its own burst before the shared level reaches it: 35 MiB measured. Bounded at 60 MiB
# (before: 523 MiB, Redis busy 3.0 s of the 4, the bystander's p50 2.2 s and p99 4.1 s).
HTTP_HISTORY_BYTES_FROM_ONE_CLIENT = 60 * MIB
# New connections of one address through nginx joining with an old `since`, 5 every 100 ms: each
# is sent up to 30 missed 60 KB messages. The client's budget over all nodes lets ~400-600 of
# them through in the window; bounded at 1,200 (before: 4,810, Redis busy 1.6 s of the 4).
REJOINS_PER_TICK = 5
# Event streams of one address through nginx resuming from an old Last-Event-ID, 5 every 100 ms,
# each read for up to 1.5 s: before, 298 MiB in 4 s (Redis busy 1.8 s). Bounded at 80 MiB.
RESUMES_PER_TICK = 5
RESUMED_BYTES_FROM_ONE_CLIENT = 80 * MIB
MISSED_MESSAGES_FROM_ONE_CLIENT = 1200
# What one client may read from history over WebSockets in the window: its burst (8 MiB) and
# 4 MiB/s: ~24 MiB (26 measured). Bounded at 40 MiB (before: 107 MiB in 4 s with the bystander's
# p50 at 139 ms, p99 980 ms; 440 MB in 5 s against a lone node).
HISTORY_BYTES_FROM_ONE_CLIENT = 40 * MIB


async def every_tick(per_tick: int, attempt: Callable[[], Awaitable[None]]) -> None:
    """``per_tick`` attempts every TICK_S for WINDOW_S; returns when all of them are done."""
    started, running = time.monotonic(), []
    while time.monotonic() < started + WINDOW_S:
        running += [asyncio.ensure_future(attempt()) for _ in range(per_tick)]
        await asyncio.sleep(TICK_S)
    await asyncio.gather(*running)


def redis_cpu_seconds(port: int) -> float:
    info: str = redis_command(port, "INFO", "cpu")
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    return float(fields["used_cpu_sys"]) + float(fields["used_cpu_user"])


async def read_history_hard(port: int, room: str, deadline: float, received: list[int]) -> None:
    """Join, then ask for the room's history at the frame rate, reading (and dropping) every
    byte as fast as it comes."""
    reader = await Reader.open(port, room, received)
    request = text({"type": "history", "room": room}) * REQUESTS_PER_TICK
    try:
        while time.monotonic() < deadline and not reader.dropping.done():
            reader.writer.write(request)
            await asyncio.wait_for(reader.writer.drain(), scaled(10))
            await asyncio.sleep(TICK_S)
    finally:
        reader.close()


async def full_room(node: Any) -> str:
    """A room whose history holds its 2 MiB: 36 x 60 KB from three other addresses."""
    return (await full_room_and_epoch(node))[0]


async def full_room_and_epoch(node: Any) -> tuple[str, str]:
    room = f"reads-{uuid.uuid4().hex[:8]}"
    fillers = [
        await RawWebSocket.connect(
            "127.0.0.1", node.port, headers=[("X-Forwarded-For", f"198.51.100.{20 + index}")]
        )
        for index in range(3)
    ]
    try:
        for index, ws in enumerate(fillers):
            joined = await join(ws, room, f"filler{index}")
        for ws in fillers:
            outcome = await burst(ws, room, 12)
            assert outcome.acked == 12, outcome
    finally:
        for ws in fillers:
            await ws.close()
    return room, str(joined["epoch"])


async def test_one_client_cannot_make_the_node_read_history_without_end(
    cluster: Any, probe: BystanderProbe
) -> None:
    node = cluster.nodes[0]
    room = await full_room(node)
    received: list[int] = []
    redis_before = redis_cpu_seconds(cluster.redis_port)
    with probe.on(node) as bystander:
        deadline = time.monotonic() + WINDOW_S
        await asyncio.gather(
            *(read_history_hard(node.port, room, deadline, received) for _ in range(READERS))
        )
    redis_spent = redis_cpu_seconds(cluster.redis_port) - redis_before
    got = sum(received)
    figures = (
        f"{READERS} connections of one address asking a 2 MiB history at the frame rate for "
        f"{WINDOW_S:.0f} s: {got / MIB:.0f} MiB sent "
        f"(bound {HISTORY_BYTES_FROM_ONE_CLIENT / MIB:.0f}"
        f"), Redis CPU {redis_spent:.2f} s"
    )
    print(figures, bystander[0].describe())
    assert got <= HISTORY_BYTES_FROM_ONE_CLIENT, figures
    BystanderProbe.assert_fast(bystander, "history reads from one address")


async def test_a_page_reload_of_sixteen_rooms_gets_every_history(cluster: Any) -> None:
    """What the limit must never refuse: one connection joining 16 rooms of ordinary messages
    and asking each one's history at once (the page after a reload)."""
    rooms = [f"reload-{uuid.uuid4().hex[:8]}" for _ in range(16)]
    # Its own address: the attack above left 127.0.0.1's budget in debt.
    ws = await RawWebSocket.connect(
        "127.0.0.1", cluster.nodes[0].port, headers=[("X-Forwarded-For", "198.51.100.40")]
    )
    try:
        for room in rooms:
            await join(ws, room, "reader")
            await ws.send({"type": "message", "room": room, "text": "hello " * 20})
        ws.send_bytes(b"".join(text({"type": "history", "room": r, "id": r}) for r in rooms))
        answers = [await ws.next_text(type="history", id=room) for room in rooms]
        refused = [e for e in ws.received.texts if e.get("type") == "error"]
    finally:
        await ws.close()
    assert not refused, refused
    assert all(answer["messages"] for answer in answers)


async def test_a_client_rejoining_with_since_on_sixteen_connections_recovers_every_one(
    cluster: Any,
) -> None:
    """What the limit must never refuse either: one client (a user's tabs, an office behind one
    address) back from a node's death, rejoining with `since` on 16 connections at once, on a
    node that never answered those rooms. Each rejoin reserving a whole history (2 MiB of the
    8 MiB burst) told the fifth connection onwards `overloaded`, however little it had missed."""
    rooms = [f"back-{uuid.uuid4().hex[:8]}" for _ in range(16)]
    # Its own address: the attacks above left 127.0.0.1's budget in debt.
    address = [("X-Forwarded-For", "198.51.100.43")]
    writer = await RawWebSocket.connect("127.0.0.1", cluster.nodes[0].port, headers=address)
    epochs: dict[str, object] = {}
    try:
        for room in rooms:
            epochs[room] = (await join(writer, room, "writer"))["epoch"]
            # One message each: a connection's message rate (10/s, 20) holds 16 of them.
            await writer.send({"type": "message", "room": room, "text": "missed " * 50})
        for room in rooms:
            await writer.next_text(type="message", room=room, offset=1)
    finally:
        await writer.close()
    tabs = [
        await RawWebSocket.connect("127.0.0.1", cluster.nodes[1].port, headers=address)
        for _ in rooms
    ]
    try:
        for tab, room in zip(tabs, rooms, strict=True):
            since = {"epoch": epochs[room], "offset": 0}
            tab.send_bytes(text({"type": "join", "room": room, "username": "back", "since": since}))
        answers = [
            await tab.next_text(type="joined", room=room)
            for tab, room in zip(tabs, rooms, strict=True)
        ]
    finally:
        for tab in tabs:
            await tab.close()
    not_recovered = [a for a in answers if a.get("recovered") is not True]
    assert not not_recovered, not_recovered


async def test_one_client_cannot_make_nginx_and_the_nodes_read_history_without_end(
    cluster: Any, probe: BystanderProbe
) -> None:
    node = cluster.nodes[0]
    room = await full_room(node)
    sizes: list[int] = []

    async def ask() -> None:
        answer = await http(cluster.nginx_port, "GET", f"/api/rooms/{room}/history?limit=100")
        sizes.append(len(answer.body) if answer.status == 200 else 0)

    redis_before = redis_cpu_seconds(cluster.redis_port)
    with probe.on(node) as bystander:
        await every_tick(HTTP_REQUESTS_PER_TICK, ask)
    redis_spent = redis_cpu_seconds(cluster.redis_port) - redis_before
    got = sum(sizes)
    figures = (
        f"{len(sizes)} HTTP history requests of one address through nginx in {WINDOW_S:.0f} s: "
        f"{sum(1 for size in sizes if size > MIB)} answers of 2 MiB, {got / MIB:.0f} MiB "
        f"(bound {HTTP_HISTORY_BYTES_FROM_ONE_CLIENT / MIB:.0f}), Redis CPU {redis_spent:.2f} s"
    )
    print(figures, bystander[0].describe())
    assert got <= HTTP_HISTORY_BYTES_FROM_ONE_CLIENT, figures
    BystanderProbe.assert_fast(bystander, "HTTP history reads from one address")


async def test_sixteen_histories_asked_at_once_over_http_are_all_answered(cluster: Any) -> None:
    """What the limit must never refuse: sixteen rooms' histories asked in parallel (a page or
    a dashboard), none of whose sizes the node knew."""
    node = cluster.nodes[0]
    address = [("X-Forwarded-For", "198.51.100.41")]
    rooms = [f"parallel-{uuid.uuid4().hex[:8]}" for _ in range(16)]
    ws = await RawWebSocket.connect("127.0.0.1", node.port, headers=address)
    try:
        for room in rooms:
            await join(ws, room, "writer")
            await ws.send({"type": "message", "room": room, "text": "hello " * 20, "id": room})
            await ws.next_text(type="ack", id=room)
    finally:
        await ws.close()
    answers = await asyncio.gather(
        *(http(node.port, "GET", f"/api/rooms/{room}/history", headers=address) for room in rooms)
    )
    assert [answer.status for answer in answers] == [200] * 16, [a.body for a in answers]
    assert all(answer.json()["messages"] for answer in answers)


async def test_rejoining_with_an_old_since_cannot_read_history_without_end(
    cluster: Any, probe: BystanderProbe
) -> None:
    node = cluster.nodes[0]
    room, epoch = await full_room_and_epoch(node)
    counts: list[int] = []
    overloaded: list[bool] = []

    async def rejoin() -> None:
        ws = await RawWebSocket.connect("127.0.0.1", cluster.nginx_port)
        try:
            since = {"epoch": epoch, "offset": 10}  # history holds offsets 3-36
            await ws.send({"type": "join", "room": room, "username": "again", "since": since})
            joined = await ws.next_text(type="joined")
            overloaded.append(joined.get("reason") == "overloaded")
            wanted = 0 if joined.get("reason") else 26
            async with asyncio.timeout(scaled(10)):
                while sum(1 for e in ws.received.texts if e.get("type") == "message") < wanted:
                    ws.received.arrived.clear()
                    await ws.received.arrived.wait()
            counts.append(sum(1 for e in ws.received.texts if e.get("type") == "message"))
        finally:
            await ws.close()

    redis_before = redis_cpu_seconds(cluster.redis_port)
    with probe.on(node) as bystander:
        await every_tick(REJOINS_PER_TICK, rejoin)
    redis_spent = redis_cpu_seconds(cluster.redis_port) - redis_before
    got = sum(counts)
    figures = (
        f"{len(counts)} rejoins with an old since from one address through nginx in "
        f"{WINDOW_S:.0f} s: {got} missed messages of 60 KB sent (bound "
        f"{MISSED_MESSAGES_FROM_ONE_CLIENT}), {sum(overloaded)} told overloaded, Redis CPU "
        f"{redis_spent:.2f} s"
    )
    print(figures, bystander[0].describe())
    assert got <= MISSED_MESSAGES_FROM_ONE_CLIENT, figures
    assert any(overloaded) and not all(overloaded), figures
    BystanderProbe.assert_fast(bystander, "rejoins with an old since from one address")


async def test_event_streams_resumed_from_an_old_id_cannot_read_history_without_end(
    cluster: Any, probe: BystanderProbe
) -> None:
    node = cluster.nodes[0]
    room, epoch = await full_room_and_epoch(node)
    sizes: list[int] = []
    overloaded: list[bool] = []

    async def resume() -> None:
        reader, writer = await open_socket("127.0.0.1", cluster.nginx_port)
        writer.write(
            f"GET /api/rooms/{room}/events HTTP/1.1\r\nHost: x\r\n"
            f"Last-Event-ID: {epoch}:10\r\n\r\n".encode()
        )
        got = b""
        try:
            async with asyncio.timeout(1.5):  # long enough on loopback for a 2 MiB catch-up
                while len(got) < 2_000_000 and (chunk := await reader.read(1 << 20)):
                    got += chunk
        except TimeoutError:
            pass
        finally:
            writer.close()
        sizes.append(len(got))
        overloaded.append(b'"reason":"overloaded"' in got[:4096])

    redis_before = redis_cpu_seconds(cluster.redis_port)
    with probe.on(node) as bystander:
        await every_tick(RESUMES_PER_TICK, resume)
    redis_spent = redis_cpu_seconds(cluster.redis_port) - redis_before
    got = sum(sizes)
    figures = (
        f"{len(sizes)} event streams of one address resumed from an old id through nginx in "
        f"{WINDOW_S:.0f} s: {got / MIB:.0f} MiB sent (bound "
        f"{RESUMED_BYTES_FROM_ONE_CLIENT / MIB:.0f}), {sum(overloaded)} told overloaded, Redis "
        f"CPU {redis_spent:.2f} s"
    )
    print(figures, bystander[0].describe())
    assert got <= RESUMED_BYTES_FROM_ONE_CLIENT, figures
    assert any(overloaded) and not all(overloaded), figures
    BystanderProbe.assert_fast(bystander, "event stream resumes from one address")
