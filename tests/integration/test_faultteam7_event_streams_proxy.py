"""Event streams (SSE) through nginx, followed as EventSource follows them, while a node is
drained (SIGTERM: it ends its streams, and EventSource comes back through nginx to another node
with ``Last-Event-ID``) or nginx itself is restarted (every stream through it cut, then resumed
once it listens again). Under steady traffic from senders on the other nodes, each acknowledged
message must reach every stream once and in order, or the stream must be told (a ``loss``
event, or its resume answered ``recovered: false``). WebSocket members and senders are on the
nodes that stay, directly: they see neither fault.
"""

from __future__ import annotations

from functools import partial

import pytest
from roomcast_dev.devcluster import LocalCluster

from tests.support.cluster import FAST_ENV, ready, until
from tests.support.delivery import Fault, Traffic, in_thread
from tests.support.event_streams import StreamFollower, follow_stream, run_through

pytestmark = pytest.mark.integration

ROOMS = ["east", "west"]
STREAMS_PER_ROOM = 6  # through nginx (least_conn): some on each node


async def through_nginx(cluster: LocalCluster, fault: Fault, what: str) -> list[StreamFollower]:
    for node in cluster.nodes:
        await until(partial(ready, node), 20, f"{node.node_id} ready")
    followers = [
        await follow_stream(cluster.nginx_port, room, f"{room}-sse-{index}")
        for room in ROOMS
        for index in range(STREAMS_PER_ROOM)
    ]
    staying = [node.url for node in cluster.nodes[1:]]
    traffic = await Traffic.start(lambda i: staying[i % len(staying)], ROOMS)
    await run_through(traffic, followers, fault, what)
    return followers


async def test_streams_through_nginx_while_a_node_is_drained() -> None:
    with LocalCluster(3, node_env=FAST_ENV) as cluster:
        drained = cluster.nodes[0]

        async def drain() -> None:
            await in_thread(partial(drained.process.stop, 30))  # SIGTERM, then its exit

        followers = await through_nginx(cluster, drain, "node drained")
        assert any(len(f.opened) > 1 for f in followers), "no stream was on the drained node"


async def test_streams_through_nginx_restarted() -> None:
    with LocalCluster(3, node_env=FAST_ENV) as cluster:

        async def restart_nginx() -> None:
            assert cluster.nginx is not None
            await in_thread(cluster.nginx.stop)
            await in_thread(cluster.start_nginx)

        followers = await through_nginx(cluster, restart_nginx, "nginx restarted")
        assert all(len(f.opened) > 1 for f in followers), "a stream was not cut"
