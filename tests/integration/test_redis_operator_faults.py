"""What an operator (or a managed Redis service) does to a running Redis besides killing it, under
steady traffic with members on 3 nodes that stay connected: the delivery guarantee must hold
(see ``tests/support/delivery.py``), the client must be told of every refusal, and the nodes
must come back to acknowledging messages by themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster

from roomcast.broker import scripts
from tests.support.cluster import FAST_ENV
from tests.support.delivery import Traffic, in_thread

pytestmark = pytest.mark.integration

ROOMS = ["north", "south"]
QUICK_ENV = dict(FAST_ENV, ROOMCAST_REDIS_TIMEOUT="1")


@pytest.fixture
def quick_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(3, node_env=QUICK_ENV) as running:
        yield running


async def test_script_cache_flushed_under_traffic(quick_cluster: LocalCluster) -> None:
    """``SCRIPT FLUSH`` (or a managed Redis that drops its script cache) answers every EVALSHA
    with NOSCRIPT: the messages it refuses are answered ``unavailable``, the nodes load their
    scripts again and acknowledge what follows (they kept refusing everything for good)."""
    cluster = quick_cluster
    admin = redis.Redis(port=cluster.redis_port)
    traffic = await Traffic.start(cluster.url, ROOMS)
    try:
        await traffic.more_acks(5)
        for _ in range(3):
            await in_thread(admin.script_flush)
            await traffic.more_acks(5)
        await traffic.finish()
        print(f"\nSCRIPT FLUSH x3: {traffic.summary()}")
        traffic.check()
        # Redis kept its data: nothing was lost, so nothing is announced lost.
        assert all(not member.losses for member in traffic.members)
        shas = [script.sha.decode() for script in scripts.FENCED.all]
        assert await in_thread(partial(admin.script_exists, *shas)) == [True] * len(shas)
    finally:
        await traffic.close()
        admin.close()
