"""Redis started again on a large snapshot answers ``-LOADING`` for seconds: a node must say it
is not ready for the whole load, not now and then (nginx and a Kubernetes probe would send it
clients it refuses), and answer a send meanwhile ``unavailable``, never leave it waiting.

The command link connects (``INFO`` is answered while loading), then its script load is refused
``-LOADING`` and the link drops, again and again: the node was ready between the two.
"""

from __future__ import annotations

import asyncio
from functools import partial

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster

from tests.integration.test_faultteam15_redis_loading import (
    FILLER_KEYS,
    SLOW_LOAD,
    loading,
    snapshot_redis,
)
from tests.support.cluster import QUICK_ENV, ready, until
from tests.support.delivery import in_thread
from tests.support.restartable_redis import RestartableRedis
from tests.support.wsclient import Client

pytestmark = pytest.mark.integration

__all__ = ["snapshot_redis"]  # the fixture, shared with the load's delivery test

MAX_PROBES = 2_000  # readiness probes over the load (each an HTTP request), at most


def still_loading(admin: redis.Redis) -> bool:
    """Whether Redis says it is loading (INFO is answered while it loads)."""
    return bool(admin.info("persistence")["loading"])


def readiness_while_loading(cluster: LocalCluster, admin: redis.Redis) -> tuple[int, int]:
    """Probe every node's readiness for as long as Redis loads: (probes, answered ready)."""
    probes = ready_seen = 0
    while probes < MAX_PROBES and still_loading(admin):
        for node in cluster.nodes:
            probes += 1
            ready_seen += ready(node)
    return probes, ready_seen


async def test_a_node_is_not_ready_for_the_whole_load(snapshot_redis: RestartableRedis) -> None:
    env = dict(QUICK_ENV, ROOMCAST_REDIS_URL=f"redis://127.0.0.1:{snapshot_redis.port}")
    admin = redis.Redis(port=snapshot_redis.port)
    with LocalCluster(2, redis=False, nginx=False, node_env=env) as cluster:
        try:
            for node in cluster.nodes:
                await until(partial(ready, node), 20, f"{node.node_id} ready")
            member = await Client.connect(cluster.nodes[0].url)
            await member.send(type="join", room="loading-room", username="m", id="join")
            await member.recv_where(lambda e: e["type"] == "joined")
            await in_thread(partial(admin.execute_command, "DEBUG", "POPULATE", FILLER_KEYS))
            await in_thread(admin.save)
            restart = partial(snapshot_redis.kill_and_restart, SLOW_LOAD, "Loading RDB")
            await in_thread(restart)
            await until(partial(loading, admin), 10, "redis loading")
            probing = asyncio.ensure_future(
                in_thread(partial(readiness_while_loading, cluster, admin))
            )
            await member.send(type="message", room="loading-room", text="during", id="during")
            answer = await member.recv_where(lambda e: e.get("id") == "during")
            probes, ready_seen = await probing
            print(f"\n{probes} readiness probes while loading, {ready_seen} answered ready")
            assert answer["type"] == "error" and answer["code"] == "unavailable", answer
            assert probes >= 10 * len(cluster.nodes)  # the load was long enough to watch
            assert ready_seen == 0
            for node in cluster.nodes:
                await until(partial(ready, node), 30, f"{node.node_id} ready again")
            await member.close()
        finally:
            admin.close()
