"""Event streams (SSE, ``GET /api/rooms/{room}/events``) followed as EventSource follows them,
beside WebSocket members, across a Sentinel failover and a Redis Cluster shard failover under
steady traffic: each acknowledged message reaches every stream once and in order, or the stream
is told (a ``loss`` event, or its resume answered ``recovered: false``); nothing refused reaches
one. Streams are opened on every node directly and through nginx.
"""

from __future__ import annotations

import pytest
from roomcast_dev.devcluster import LocalCluster

from tests.support.delivery import Fault, Traffic
from tests.support.event_streams import StreamFollower, follow_stream, run_through
from tests.support.failovers import cluster_shard_failover, sentinel_failover

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
    async with sentinel_failover() as (cluster, fail_over):
        await across(cluster, ["north", "south"], fail_over, "sentinel failover")


async def test_streams_across_a_cluster_shard_failover() -> None:
    async with cluster_shard_failover() as (cluster, rooms, fail_over):
        await across(cluster, rooms, fail_over, "cluster shard failover")
