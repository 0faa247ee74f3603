"""A Redis service behind one address (a relay), a replica of it on a second server, and nodes
reaching Redis only through the address under steady traffic: for faults where the address is
moved to the replica while the nodes' open links stay where they were."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import redis
from roomcast_dev.devcluster import LocalCluster

from tests.adversarial.redis_relay import RedisRelay
from tests.support.cluster import QUICK_ENV, ready, until
from tests.support.delivery import Traffic, in_thread


@dataclass
class BehindAnAddress:
    old: redis.Redis  # the primary the address leads to at first
    new: redis.Redis  # its replica, in sync
    new_port: int
    relay: RedisRelay  # ``relay.redis_port = new_port`` moves the address
    traffic: Traffic


def in_sync(replica: redis.Redis) -> bool:
    return replica.info("replication").get("master_link_status") == "up"


@asynccontextmanager
async def replica_behind_an_address(rooms: list[str]) -> AsyncIterator[BehindAnAddress]:
    """3 nodes on the address, ``rooms`` with traffic acknowledged, the replica in sync."""
    with (
        LocalCluster(0, nginx=False) as first,
        LocalCluster(0, nginx=False) as second,
    ):
        old, new = redis.Redis(port=first.redis_port), redis.Redis(port=second.redis_port)
        relay = RedisRelay(first.redis_port)
        address = await relay.start()
        env = dict(QUICK_ENV, ROOMCAST_REDIS_URL=f"redis://127.0.0.1:{address}/0")
        try:
            await in_thread(partial(new.replicaof, "127.0.0.1", first.redis_port))
            with LocalCluster(3, redis=False, node_env=env) as cluster:
                for node in cluster.nodes:
                    await until(partial(ready, node), 20, f"{node.node_id} ready")
                traffic = await Traffic.start(cluster.url, rooms)
                try:
                    await traffic.more_acks(5)
                    await until(partial(in_sync, new), 10, "the replica in sync")
                    yield BehindAnAddress(old, new, second.redis_port, relay, traffic)
                finally:
                    await traffic.close()
        finally:
            await relay.close()
            old.close()
            new.close()
