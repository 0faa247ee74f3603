"""Event streams (SSE) through nginx, followed as EventSource follows them, while a node is
drained (SIGTERM: it ends its streams, and EventSource comes back through nginx to another node
with ``Last-Event-ID``) or SIGKILLed, while nginx itself is restarted (every stream through it
cut, then resumed once it listens again), reloaded or paused (SIGSTOP, its workers too), and
while Redis restarts without its data (live streams get ``loss`` ``epoch_changed``). Under
steady traffic from senders on the nodes, each acknowledged message must reach every stream
once and in order, or the stream must be told (a ``loss`` event, or its resume answered
``recovered: false``). WebSocket members and senders are on nodes that stay, directly (but for
the paused proxy's readers): they see none of the proxy's or node's faults.
"""

from __future__ import annotations

import os
import signal
from functools import partial
from pathlib import Path

import pytest
from roomcast_dev.devcluster import LocalCluster

from tests.support.cluster import FAST_ENV, QUICK_ENV, ready, until
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


@pytest.mark.parametrize("stop", ["drained", "killed"])
async def test_streams_through_nginx_while_a_node_stops(stop: str) -> None:
    with LocalCluster(3, node_env=FAST_ENV) as cluster:
        stopped = cluster.nodes[0]

        async def stop_node() -> None:
            if stop == "drained":
                await in_thread(partial(stopped.process.stop, 30))  # SIGTERM, then its exit
            else:
                stopped.process.signal(signal.SIGKILL)
                await in_thread(partial(stopped.process.popen.wait, 10))

        followers = await through_nginx(cluster, stop_node, f"node {stop}")
        assert any(len(f.opened) > 1 for f in followers), "no stream was on the stopped node"


async def test_streams_through_nginx_restarted() -> None:
    with LocalCluster(3, node_env=FAST_ENV) as cluster:

        async def restart_nginx() -> None:
            assert cluster.nginx is not None
            await in_thread(cluster.nginx.stop)
            await in_thread(cluster.start_nginx)

        followers = await through_nginx(cluster, restart_nginx, "nginx restarted")
        assert all(len(f.opened) > 1 for f in followers), "a stream was not cut"


async def test_streams_through_nginx_reloaded() -> None:
    with LocalCluster(3, node_env=FAST_ENV) as cluster:

        async def reload_nginx() -> None:
            await in_thread(cluster.reload_nginx)

        await through_nginx(cluster, reload_nginx, "nginx reloaded")


async def test_streams_across_a_redis_restart_without_data() -> None:
    with LocalCluster(3, node_env=QUICK_ENV) as cluster:

        async def restart_redis() -> None:
            await in_thread(cluster.kill_redis)
            await in_thread(cluster.start_redis)

        followers = await through_nginx(cluster, restart_redis, "redis restarted empty")
        assert all(f.member.losses for f in followers), "a stream was not told of the new epoch"


async def test_readers_through_a_paused_nginx() -> None:
    """nginx SIGSTOPped (a frozen proxy host) while senders, connected to the nodes directly,
    have 100 more messages each acknowledged: WebSocket readers and streams through nginx get
    nothing meanwhile, then everything, once and in order."""
    with LocalCluster(3, node_env=FAST_ENV) as cluster:
        for node in cluster.nodes:
            await until(partial(ready, node), 20, f"{node.node_id} ready")
        assert cluster.nginx is not None
        nginx = cluster.nginx
        followers = [
            await follow_stream(cluster.nginx_port, room, f"{room}-sse-{index}")
            for room in ROOMS
            for index in range(2)
        ]
        nodes = [node.url for node in cluster.nodes]
        # Per room: 3 readers through nginx, then 2 senders on the nodes themselves.
        traffic = await Traffic.start(
            lambda i: cluster.url if i % 5 < 3 else nodes[i % len(nodes)], ROOMS
        )

        # The master and its workers (which hold the connections).
        children = Path(f"/proc/{nginx.pid}/task/{nginx.pid}/children").read_text().split()
        frozen = [nginx.pid, *map(int, children)]
        assert len(frozen) > 1, "no nginx worker"

        async def pause_nginx() -> None:
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            proxied = [m for m in traffic.members if m not in traffic.senders]
            before = [len(m.messages) for m in proxied]
            try:
                await traffic.more_acks(100, timeout=30)
                during = [len(m.messages) - n for m, n in zip(proxied, before, strict=True)]
            finally:
                for pid in frozen:
                    os.kill(pid, signal.SIGCONT)
            # What nginx had passed on before it froze, at most: not the 200 per room since.
            assert max(during) < 50, during

        await run_through(traffic, followers, pause_nginx, "nginx paused")
