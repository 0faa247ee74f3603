"""Red team 10: one address's reconnect churn hides everybody else's joins from a room.

A room whose joins and leaves come faster than 10 a second after a burst of 100 has them
coalesced into `presence_changed` counts (red team 8's defence against reconnect churn),
whoever causes them, until 10 s of quiet. So one address opening, joining and closing in a
loop turns a room's presence into counts for every member: a real user joining meanwhile is
never named (`user_joined`), and nobody can tell who came or left without asking `presence`.
Before, 4 loops of one address for 2 s (598 cycles): the member got no `user_joined` for
"bob" joining right after, only 3 `presence_changed` counts. Now each join and leave on the
room's channel names its client (core/churn.py) and only the churner's are coalesced: bob is
named.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.adversarial.churn_cover import churn_cycle, join_is_named, joined, told
from tests.adversarial.devcluster_shim import LocalCluster, RedisClusterTopology, SentinelTopology
from tests.adversarial.rawws import RawWebSocket
from tests.adversarial.readiness import until_ready

ROOM = "covered"
LOOPS = 4
CHURN_S = 2.0


@pytest.fixture(params=["memory", "standalone", "sentinel", "cluster"])
def open_node(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The node alone (in-memory broker) and on each Redis topology: the client of each join
    travels in what the join script publishes, the same bytes on all."""
    with contextlib.ExitStack() as stack:
        env: dict[str, str] = {}
        if request.param == "sentinel":
            env = stack.enter_context(SentinelTopology(replicas=0)).node_env()
        elif request.param == "cluster":
            env = stack.enter_context(RedisClusterTopology(primaries=3, replicas=0)).node_env()
        standalone = request.param == "standalone"
        cluster = LocalCluster(1, nginx=False, redis=standalone, node_env=env)
        yield stack.enter_context(cluster).nodes[0]


async def test_a_churning_address_does_not_hide_other_users_joins(open_node: Any) -> None:
    await until_ready(open_node)
    watcher = await joined(open_node.port, ROOM, "watcher")
    # Bob is another client: another address (the churner's joins and leaves are coalesced by
    # client, its address in open mode). His WebSocket is open before the churn.
    bob = await RawWebSocket.connect("127.0.0.1", open_node.port, source="127.0.0.2")
    stop = time.monotonic() + CHURN_S
    cycles = 0

    async def churn(loop: int) -> None:
        nonlocal cycles
        while time.monotonic() < stop:
            cycles += await churn_cycle(open_node.port, ROOM, f"churn{loop}")

    try:
        await asyncio.gather(*(churn(loop) for loop in range(LOOPS)))
        named = await join_is_named(bob, watcher, ROOM)
        counts = told(watcher)[1]
        print(f"{cycles} churn cycles; bob named: {named}; presence_changed: {counts}")
        # Before: not named (4 loops, 2 s: the room coalesced for everybody).
        assert named, f"bob's join hidden in {counts} presence_changed after {cycles} cycles"
    finally:
        for ws in (watcher, bob):
            await ws.close()
