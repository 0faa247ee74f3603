"""The Python client (``roomcast.client``), as an application runs it, across a Sentinel failover
and a Redis Cluster shard failover under steady traffic: each message a sender's ``wait()``
confirmed (with its epoch and offset) reaches every client of the room once and in order as a
``ChatMessage``, or the client is told with a ``Gap`` (``epoch_changed``, ``too_old``,
``unavailable``) that covers it; a message refused to its sender (``SendError``) reaches nobody.
A ``Gap`` the client found by itself (``offsets_skipped``: a hole nobody announced) is a failure.
"""

from __future__ import annotations

import signal
from functools import partial

import pytest
from roomcast_dev.devcluster import LocalCluster

from tests.support.cluster import QUICK_ENV, ready, until
from tests.support.delivery import in_thread
from tests.support.failovers import cluster_shard_failover, sentinel_failover
from tests.support.python_clients import across

pytestmark = pytest.mark.integration


async def test_python_clients_across_a_sentinel_failover() -> None:
    async with sentinel_failover() as (cluster, fail_over):
        await across(cluster.url, "north", fail_over, "sentinel failover")


async def test_python_clients_across_a_cluster_shard_failover() -> None:
    async with cluster_shard_failover() as (cluster, rooms, fail_over):
        await across(cluster.url, rooms[0], fail_over, "cluster shard failover")


@pytest.mark.parametrize("stop", ["drained", "killed", "nginx restarted"])
async def test_python_clients_across_a_node_or_nginx_stopping(stop: str) -> None:
    with LocalCluster(3, node_env=QUICK_ENV) as cluster:
        for node in cluster.nodes:
            await until(partial(ready, node), 20, f"{node.node_id} ready")
        # least_conn: the five clients are spread over the three nodes.
        stopped = cluster.nodes[0]

        async def stop_it() -> None:
            if stop == "drained":
                await in_thread(partial(stopped.process.stop, 30))  # SIGTERM, then its exit
            elif stop == "killed":
                stopped.process.signal(signal.SIGKILL)
                await in_thread(partial(stopped.process.popen.wait, 10))
            else:
                assert cluster.nginx is not None
                await in_thread(cluster.nginx.stop)
                await in_thread(cluster.start_nginx)

        await across(cluster.url, "north", stop_it, stop)
