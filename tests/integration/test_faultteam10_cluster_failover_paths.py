"""A Redis Cluster shard's primary SIGKILLed (its replica takes the room's slot over) under
WebSocket traffic, an event stream on every node and through nginx, and HTTP posts to each: the
same promise on every path at once, checked by offset (a room on the failed shard, one on a
healthy shard), and history against what members and posters were told. WebSocket members,
streams and posts are each checked alone across the same fault by fault team 7's tests.
"""

from __future__ import annotations

import pytest
from redis.cluster import ClusterNode, RedisCluster

from tests.support.failovers import cluster_shard_failover
from tests.support.posts import checked_after, on_every_path

pytestmark = pytest.mark.integration


async def test_a_shard_failover_is_told_on_every_path() -> None:
    async with cluster_shard_failover() as (cluster, rooms, fail_over):
        traffic, poster = await on_every_path(cluster, rooms)
        try:
            await traffic.more_acks(5)
            await fail_over()
            await traffic.more_acks(20, timeout=40)
            seeds = cluster.node_env["ROOMCAST_REDIS_URL"].split(",")
            ports = [int(url.rsplit(":", 1)[1]) for url in seeds]
            seed_nodes = [ClusterNode("127.0.0.1", p) for p in ports]  # type: ignore[no-untyped-call]
            admin = RedisCluster(startup_nodes=seed_nodes)  # the first live one answers
            try:
                await checked_after(traffic, poster, admin, "cluster shard failover")
            finally:
                admin.close()
            hit = [m for m in traffic.members if m.room == rooms[0]]
            assert all(m.losses for m in hit), "a member of the failed shard's room never told"
        finally:
            await poster.close()
            await traffic.close()
