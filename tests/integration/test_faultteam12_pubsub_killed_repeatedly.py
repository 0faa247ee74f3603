"""``CLIENT KILL TYPE pubsub`` every 200 ms for 4 s under steady WebSocket sends, HTTP posts to
every node and through nginx, and an event stream of each room on every node and through nginx:
kills land while a node is still re-subscribing and filling its last gap from history. Redis
keeps its data, so every acknowledged message and accepted post reaches every member and stream
once and in order with no ``loss``, and history agrees with what members were sent. Three kills
spaced by traffic are ``test_delivery_faults``'s.
"""

from __future__ import annotations

import asyncio
from functools import partial

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster

from tests.support.delivery import in_thread
from tests.support.posts import checked_after, on_every_path

pytestmark = pytest.mark.integration

KILLS = 20
KILL_EVERY_S = 0.2


async def test_subscriber_links_killed_every_200ms_lose_nothing(
    quick_cluster: LocalCluster,
) -> None:
    cluster = quick_cluster
    rooms = ["storm-a", "storm-b"]
    admin = redis.Redis(port=cluster.redis_port)
    traffic, poster = await on_every_path(cluster, rooms)
    try:
        await traffic.more_acks(5)
        killed = 0
        for _ in range(KILLS):
            killed += await in_thread(partial(admin.client_kill_filter, _type="pubsub"))
            # The fault's own cadence (not a wait for an event): the next kill comes whether
            # or not the nodes have subscribed again.
            await asyncio.sleep(KILL_EVERY_S)
        assert killed >= KILLS, "the kills reached no subscriber"
        await traffic.more_acks(10, timeout=30)
        await checked_after(traffic, poster, admin, f"CLIENT KILL TYPE pubsub x{KILLS}")
        assert all(not m.losses for m in traffic.members), "Redis kept its data, yet a loss"
    finally:
        await poster.close()
        await traffic.close()
        admin.close()
