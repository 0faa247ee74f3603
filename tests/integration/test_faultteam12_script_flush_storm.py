"""``SCRIPT FLUSH`` every 200 ms for 4 s under load, so that every kind of script meets NOSCRIPT:
publishes (WebSocket sends and HTTP posts, with their rate charges), joins and leaves (members
that leave and rejoin their room with ``since`` over and over), history range reads (those
rejoins' catch-ups, and the gap filler after a resubscription). Redis keeps its data: every
acknowledged message and accepted post reaches every member, stream and rejoiner once and in
order, with no ``loss``; every refused rejoin, sent again, is answered and recovers what it
missed; refused sends are told. Three flushes spaced by traffic are
``test_redis_operator_faults``'s; the same churn without flushes is
``test_faultteam12_leave_rejoin_churn``.
"""

from __future__ import annotations

import asyncio
from functools import partial

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster

from roomcast.broker import scripts
from tests.support.delivery import Traffic, in_thread
from tests.support.rejoiners import churned_through

pytestmark = pytest.mark.integration

FLUSHES = 20
FLUSH_EVERY_S = 0.2


async def test_script_cache_flushed_every_200ms_under_load(quick_cluster: LocalCluster) -> None:
    admin = redis.Redis(port=quick_cluster.redis_port)

    async def flush_storm(_traffic: Traffic) -> None:
        for _ in range(FLUSHES):
            await in_thread(admin.script_flush)
            # The fault's own cadence (not a wait for an event): the next flush comes whether
            # or not the nodes have loaded their scripts again.
            await asyncio.sleep(FLUSH_EVERY_S)

    try:
        rooms = ["flushed-a", "flushed-b"]
        what = f"SCRIPT FLUSH x{FLUSHES}"
        traffic = await churned_through(quick_cluster, rooms, flush_storm, what)
        assert all(not m.losses for m in traffic.members), "Redis kept its data, yet a loss"
        shas = [script.sha.decode() for script in scripts.FENCED.all]
        assert await in_thread(partial(admin.script_exists, *shas)) == [True] * len(shas)
    finally:
        admin.close()
