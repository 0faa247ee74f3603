"""Redis SIGKILLed and started again on a large snapshot: for seconds it answers every command
``-LOADING`` (here 20,000 filler keys loaded at 200 µs each, ``key-load-delay``), then serves.

The promise, checked by offset over every member spread on two nodes: every send while Redis
loads is answered (refused, or ``unconfirmed`` for those in flight at the kill; never left
waiting), the nodes are ready again by themselves once it has loaded, each member is told its
room's new epoch once (a restart from a snapshot lost the writes after it), and every
acknowledged message reaches every member once and in order or is covered by that ``loss``.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster

from tests.support.cluster import QUICK_ENV, not_ready, ready, until
from tests.support.delivery import Traffic, in_thread
from tests.support.refusals import refusals
from tests.support.restartable_redis import RestartableRedis, epoch_changes_told, restartable_redis

pytestmark = pytest.mark.integration

ROOMS = ["loading-east", "loading-west"]
FILLER_KEYS = 20_000
KEY_LOAD_DELAY_US = 200  # 20,000 keys: 4-7 s of LOADING


# Clients are answered (-LOADING) between chunks of this many bytes loaded: at the default
# 2 MB, a snapshot this small would keep them waiting, unanswered, to the end of the load.
SLOW_LOAD = [
    "--key-load-delay",
    str(KEY_LOAD_DELAY_US),
    "--loading-process-events-interval-bytes",
    "1024",
]


@pytest.fixture
def snapshot_redis() -> Iterator[RestartableRedis]:
    """A redis-server on an RDB file of its own, DEBUG POPULATE allowed (the filler)."""
    options = ["--save", "", "--appendonly", "no", "--enable-debug-command", "local"]
    with restartable_redis(options) as server:
        yield server


def loading(admin: redis.Redis) -> bool:
    """Whether Redis answers a read ``-LOADING`` (PING it answers while loading)."""
    try:
        admin.exists("loading-probe")
    except redis.exceptions.BusyLoadingError:
        return True
    except redis.exceptions.ConnectionError:
        return False
    return False


async def test_redis_loading_a_large_snapshot_answers_every_send_and_tells_each_member_once(
    snapshot_redis: RestartableRedis,
) -> None:
    env = dict(QUICK_ENV, ROOMCAST_REDIS_URL=f"redis://127.0.0.1:{snapshot_redis.port}")
    admin = redis.Redis(port=snapshot_redis.port)
    with LocalCluster(2, redis=False, nginx=False, node_env=env) as cluster:
        nodes = cluster.nodes
        traffic = await Traffic.start(lambda index: nodes[index % 2].url, ROOMS)
        try:
            await traffic.more_acks(10)
            await in_thread(partial(admin.execute_command, "DEBUG", "POPULATE", FILLER_KEYS))
            await in_thread(admin.save)
            await traffic.more_acks(5)
            restart = partial(snapshot_redis.kill_and_restart, SLOW_LOAD, "Loading RDB")
            await in_thread(restart)
            await until(partial(loading, admin), 10, "redis loading")
            before = refusals(traffic)
            await traffic.until(lambda: refusals(traffic) > before + 10, 10, "refusals")
            not_ready_seen = [await in_thread(partial(not_ready, node)) for node in nodes]
            for node in nodes:
                await until(partial(ready, node), 30, f"{node.node_id} ready again")
            await traffic.more_acks(10)
            await traffic.finish(timeout=30)
            told = epoch_changes_told(traffic)
            print(
                f"\nRDB restart, {FILLER_KEYS} keys loaded at {KEY_LOAD_DELAY_US} us: "
                f"{traffic.summary()}; after 10 refusals, nodes not ready {not_ready_seen}; "
                f"epoch_changed per member {told}"
            )
            traffic.check()
            assert traffic.reused_positions() == [], traffic.reused_positions()
            assert told == [1] * len(traffic.members), told
        finally:
            await traffic.close()
            admin.close()
