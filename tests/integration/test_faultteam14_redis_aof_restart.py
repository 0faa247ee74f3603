"""Redis with ``appendonly yes`` and ``appendfsync always`` SIGKILLed and started again on its
AOF under traffic, members spread over two nodes.

Nothing acknowledged is lost from the AOF, yet the nodes cannot tell this restart from one on an
older snapshot (a new ``master_replid`` either way; the fsync policy is not visible to a
script), so each room starts a new epoch, as ``docs/guarantees.md`` says of any standalone
restart. What must hold, by offset: every acknowledged message reaches every member once and in
order or the member is told, each member is told its room's new epoch once (one
``epoch_changed``, not one per message or per reconnect), and no offset is handed out twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster

from tests.support.cluster import QUICK_ENV, ready, until
from tests.support.delivery import Traffic, in_thread
from tests.support.posts import epoch
from tests.support.restartable_redis import RestartableRedis, epoch_changes_told, restartable_redis

pytestmark = pytest.mark.integration

ROOMS = ["aof-east", "aof-west"]


@pytest.fixture
def aof_redis() -> Iterator[RestartableRedis]:
    """A redis-server fsyncing its AOF before each reply."""
    with restartable_redis(
        ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
    ) as server:
        yield server


async def test_redis_restarted_on_an_always_fsynced_aof_tells_each_member_once(
    aof_redis: RestartableRedis,
) -> None:
    env = dict(QUICK_ENV, ROOMCAST_REDIS_URL=f"redis://127.0.0.1:{aof_redis.port}")
    admin = redis.Redis(port=aof_redis.port)
    with LocalCluster(2, redis=False, nginx=False, node_env=env) as cluster:
        nodes = cluster.nodes
        traffic = await Traffic.start(lambda index: nodes[index % 2].url, ROOMS)
        try:
            await traffic.more_acks(10)
            before = {room: await in_thread(partial(epoch, admin, room)) for room in ROOMS}
            await in_thread(aof_redis.kill_and_restart)
            for node in nodes:
                await until(partial(ready, node), 20, f"{node.node_id} ready again")
            await traffic.more_acks(10)
            await traffic.finish(timeout=30)
            after = {room: await in_thread(partial(epoch, admin, room)) for room in ROOMS}
            told = epoch_changes_told(traffic)
            print(
                f"\nAOF (fsync always) restart: {traffic.summary()}; epochs {before} -> "
                f"{after}; epoch_changed per member {told}"
            )
            traffic.check()
            assert traffic.reused_positions() == [], traffic.reused_positions()
            assert all(after[room] != before[room] for room in ROOMS), "epoch kept: documented"
            assert told == [1] * len(traffic.members), told
        finally:
            await traffic.close()
            admin.close()
