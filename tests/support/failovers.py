"""Nodes on a Redis that fails over, and the failover as a fault to inject mid-traffic: a
Sentinel primary SIGKILLed (a replica promoted), or a Redis Cluster shard primary SIGKILLed (its
replica takes its slots over)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial

from roomcast_dev.devcluster import LocalCluster, timeout_factor
from roomcast_dev.redis_topologies import RedisClusterTopology, RedisServer, SentinelTopology

from roomcast.broker.cluster_slots import sharded_channel, slot_of
from tests.integration.test_redis_cluster_shard_down import room_on
from tests.support.cluster import QUICK_ENV, ready, until
from tests.support.delivery import Fault, in_thread

__all__ = [
    "cluster_shard_failover",
    "hold_replication",
    "repl_offset",
    "sentinel_failover",
    "sentinel_nodes",
]


async def _all_ready(cluster: LocalCluster) -> None:
    for node in cluster.nodes:
        await until(partial(ready, node), 20, f"{node.node_id} ready")


def repl_offset(server: RedisServer, field: str) -> int:
    return int(server.client().info("replication")[field])


async def hold_replication(topology: SentinelTopology) -> tuple[RedisServer, int]:
    """The replica stops processing the primary's stream (``CLIENT PAUSE ALL``: it answers
    nothing, ``INFO`` included; ends by itself after 2 s, long enough for a test's acks and a
    kill): the primary, and the replication offset the replica had."""
    primary = topology.primary()
    (replica,) = [s for s in topology.redis_servers if s.port != primary.port]
    behind = await in_thread(partial(repl_offset, replica, "slave_repl_offset"))
    pause_ms = int(2000 * timeout_factor())
    await in_thread(partial(replica.run, "CLIENT", "PAUSE", str(pause_ms), "ALL"))
    return primary, behind


@asynccontextmanager
async def sentinel_nodes(
    extra_env: Mapping[str, str] | None = None,
) -> AsyncIterator[tuple[SentinelTopology, LocalCluster]]:
    """3 ready nodes behind nginx on a Sentinel-watched primary with one replica."""
    with SentinelTopology(replicas=1, sentinels=3) as topology:
        env = dict(QUICK_ENV, **topology.node_env(), **(extra_env or {}))
        with LocalCluster(3, redis=False, node_env=env) as cluster:
            await _all_ready(cluster)
            yield topology, cluster


@asynccontextmanager
async def sentinel_failover(
    extra_env: Mapping[str, str] | None = None,
) -> AsyncIterator[tuple[LocalCluster, Fault]]:
    """:func:`sentinel_nodes`, and its primary SIGKILLed as the fault."""
    async with sentinel_nodes(extra_env) as (topology, cluster):
        old_primary = topology.primary()

        async def fail_over() -> None:
            old_primary.kill()
            await in_thread(partial(topology.wait_for_failover, old_primary.port))

        yield cluster, fail_over


@asynccontextmanager
async def cluster_shard_failover(
    extra_env: Mapping[str, str] | None = None,
) -> AsyncIterator[tuple[LocalCluster, list[str], Fault]]:
    """3 nodes behind nginx on a 3-shard Redis Cluster, and two rooms: the first on the shard
    that fails over, the second on another one."""
    with RedisClusterTopology(primaries=3, replicas=1) as topology:
        env = dict(QUICK_ENV, **topology.node_env(), **(extra_env or {}))
        with LocalCluster(3, redis=False, node_env=env) as cluster:
            await _all_ready(cluster)
            victim, healthy = topology.primaries()[:2]
            rooms = [room_on(topology, victim, "hit"), room_on(topology, healthy, "calm")]
            slot = slot_of(sharded_channel(rooms[0]))

            async def fail_over() -> None:
                await in_thread(victim.kill)
                await in_thread(partial(topology.wait_for_new_owner, slot, victim))

            yield cluster, rooms, fail_over
