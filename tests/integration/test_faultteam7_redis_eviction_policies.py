"""An operator sets an ``allkeys-*`` eviction policy (``CONFIG SET maxmemory-policy
allkeys-lru`` or ``allkeys-random``, the shipped one being ``volatile-ttl``), and memory runs
out under steady traffic with members on 3 nodes: any key may go, in any order (a room's
counter without its epoch, its history or its lineage alone, the live nodes' registry, presence).
No offset may name two messages, and every acknowledged message must reach every member once and
in order or be covered by a ``loss`` event (see ``tests/support/delivery.py``)."""

from __future__ import annotations

from functools import partial

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster

from tests.support.delivery import Traffic, in_thread

pytestmark = pytest.mark.integration

ROOMS = ["north", "south"]


@pytest.mark.parametrize("policy", ["allkeys-lru", "allkeys-random"])
async def test_room_keys_evicted_under_an_allkeys_policy(
    quick_cluster: LocalCluster, policy: str
) -> None:
    cluster = quick_cluster
    admin = redis.Redis(port=cluster.redis_port)
    traffic = await Traffic.start(cluster.url, ROOMS)
    try:
        await traffic.more_acks(5)
        await in_thread(partial(admin.config_set, "maxmemory-policy", policy))
        used = int((await in_thread(partial(admin.info, "memory")))["used_memory"])
        await in_thread(partial(admin.config_set, "maxmemory", str(used + 200_000)))
        filler = admin.pipeline(transaction=False)
        for index in range(100):  # no TTL: under allkeys-* they compete with the rooms' keys
            filler.set(f"filler:{index}", "x" * 10_000)
        await in_thread(filler.execute)
        evicted = int((await in_thread(partial(admin.info, "stats")))["evicted_keys"])
        await traffic.more_acks(10, timeout=30)
        await in_thread(partial(admin.config_set, "maxmemory", "256mb"))
        await in_thread(partial(admin.config_set, "maxmemory-policy", "volatile-ttl"))
        await traffic.more_acks(10, timeout=30)
        await traffic.finish(timeout=30)
        print(f"\n{policy}, {evicted} keys evicted: {traffic.summary()}")
        assert not traffic.reused_positions()
        traffic.check()
    finally:
        await traffic.close()
        admin.close()
