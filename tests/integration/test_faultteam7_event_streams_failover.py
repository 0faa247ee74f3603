"""Event streams (SSE, ``GET /api/rooms/{room}/events``) followed as EventSource follows them,
beside WebSocket members, across a Sentinel failover and a Redis Cluster shard failover under
steady traffic: each acknowledged message reaches every stream once and in order, or the stream
is told (a ``loss`` event, or its resume answered ``recovered: false``); nothing refused reaches
one. Streams are opened on every node directly and through nginx.
"""

from __future__ import annotations

from functools import partial

import pytest
from roomcast_dev.devcluster import LocalCluster
from roomcast_dev.redis_topologies import RedisClusterTopology, SentinelTopology

from roomcast.broker.cluster_slots import sharded_channel, slot_of
from tests.integration.test_redis_cluster_shard_down import room_on
from tests.support.cluster import QUICK_ENV, ready, until
from tests.support.delivery import Fault, Traffic, in_thread
from tests.support.event_streams import StreamFollower, follow_stream, run_through

pytestmark = pytest.mark.integration


async def open_streams(cluster: LocalCluster, rooms: list[str]) -> list[StreamFollower]:
    """Streams on every node and through nginx, opened before the rooms' first message."""
    ports = [node.port for node in cluster.nodes]
    if cluster.use_nginx:
        ports.append(cluster.nginx_port)
    followers: list[StreamFollower] = []
    for room in rooms:
        for port in ports:
            followers.append(await follow_stream(port, room, f"{room}-sse-{port}"))
    return followers


async def across(cluster: LocalCluster, rooms: list[str], fault: Fault, what: str) -> None:
    """Steady traffic, then ``fault``, then more traffic; the guarantee checked over every
    WebSocket member and every stream."""
    followers = await open_streams(cluster, rooms)
    traffic = await Traffic.start(cluster.url, rooms)
    await run_through(traffic, followers, fault, what)


async def test_streams_across_a_sentinel_failover() -> None:
    rooms = ["north", "south"]
    with SentinelTopology(replicas=1, sentinels=3) as topology:
        env = dict(QUICK_ENV, **topology.node_env())
        with LocalCluster(3, redis=False, node_env=env) as cluster:
            for node in cluster.nodes:
                await until(partial(ready, node), 20, f"{node.node_id} ready")
            old_primary = topology.primary()

            async def fail_over() -> None:
                old_primary.kill()
                await in_thread(partial(topology.wait_for_failover, old_primary.port))

            await across(cluster, rooms, fail_over, "sentinel failover")


async def test_streams_across_a_cluster_shard_failover() -> None:
    with RedisClusterTopology(primaries=3, replicas=1) as topology:
        env = dict(QUICK_ENV, **topology.node_env())
        with LocalCluster(3, redis=False, node_env=env) as cluster:
            for node in cluster.nodes:
                await until(partial(ready, node), 20, f"{node.node_id} ready")
            victim, healthy = topology.primaries()[:2]
            rooms = [room_on(topology, victim, "hit"), room_on(topology, healthy, "calm")]
            slot = slot_of(sharded_channel(rooms[0]))

            async def fail_over() -> None:
                await in_thread(victim.kill)
                await in_thread(partial(topology.wait_for_new_owner, slot, victim))

            await across(cluster, rooms, fail_over, "cluster shard failover")
