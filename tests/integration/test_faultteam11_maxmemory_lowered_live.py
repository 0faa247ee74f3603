"""An operator lowers ``maxmemory`` live under load (``CONFIG SET maxmemory``), with
``noeviction`` (every write refused with OOM until memory is raised again) or ``allkeys-lru`` (any
of the rooms' keys may be evicted: history, epoch, counter, lineage), with WebSocket members and
senders, an event stream of each room on every node and through nginx, and HTTP posts to every
node at once.

The promise, checked by offset on every path: each acknowledged message (a WebSocket ``ack`` or
a post's 201) reaches every member once and in order or the member is told (a ``loss``); nothing
refused (an ``error``, a post's 503) is ever published; a post's 201 names the offset history
holds its text at.
"""

from __future__ import annotations

from functools import partial

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster

from tests.support.delivery import in_thread
from tests.support.posts import checked_after, on_every_path

pytestmark = pytest.mark.integration

ROOMS = ["lean-east", "lean-west"]


async def test_maxmemory_lowered_live_with_noeviction(quick_cluster: LocalCluster) -> None:
    admin = redis.Redis(port=quick_cluster.redis_port)
    traffic, poster = await on_every_path(quick_cluster, ROOMS)
    try:
        await traffic.more_acks(5)
        before = sum(len(s.refused) for s in traffic.senders)
        await in_thread(partial(admin.config_set, "maxmemory-policy", "noeviction"))
        used = int((await in_thread(partial(admin.info, "memory")))["used_memory"])
        await in_thread(partial(admin.config_set, "maxmemory", str(used // 2)))
        # Every write is refused now (OOM): wait until the senders were told so.
        await traffic.until(
            lambda: sum(len(s.refused) for s in traffic.senders) >= before + 10,
            30,
            "OOM refusals",
        )
        await in_thread(partial(admin.config_set, "maxmemory", "0"))
        await traffic.more_acks(10, timeout=30)
        await checked_after(traffic, poster, admin, "maxmemory halved, noeviction")
        assert 503 in poster.statuses(), poster.statuses()
    finally:
        await poster.close()
        await traffic.close()
        admin.close()


async def test_maxmemory_lowered_live_with_allkeys_lru(quick_cluster: LocalCluster) -> None:
    admin = redis.Redis(port=quick_cluster.redis_port)
    traffic, poster = await on_every_path(quick_cluster, ROOMS)
    try:
        await traffic.more_acks(5)
        await in_thread(partial(admin.config_set, "maxmemory-policy", "allkeys-lru"))
        used = int((await in_thread(partial(admin.info, "memory")))["used_memory"])
        await in_thread(partial(admin.config_set, "maxmemory", str(used + 100_000)))
        filler = admin.pipeline(transaction=False)
        for index in range(60):  # no TTL: under allkeys-lru they compete with the rooms' keys
            filler.set(f"filler:{index}", "x" * 10_000)
        await in_thread(filler.execute)
        await traffic.more_acks(10, timeout=30)
        evicted = int((await in_thread(partial(admin.info, "stats")))["evicted_keys"])
        await in_thread(partial(admin.config_set, "maxmemory", "0"))
        await traffic.more_acks(5, timeout=30)
        what = f"maxmemory lowered, allkeys-lru: {evicted} keys evicted"
        await checked_after(traffic, poster, admin, what)
        assert evicted > 0
    finally:
        await poster.close()
        await traffic.close()
        admin.close()
