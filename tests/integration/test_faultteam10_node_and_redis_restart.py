"""Two faults close together: a node SIGKILLed and, at the same moment, Redis restarted empty
(no persistence: a crashed pod), so the dead node's Python clients (``roomcast.client``) resume
with ``since`` on the other nodes just as Redis comes back without their rooms' history, and the
other nodes' clients stay connected through the restart.

The promise: each message a sender's ``wait()`` confirmed reaches every client once and in order,
or the client is told with a ``Gap`` that covers it (here ``epoch_changed``: the old epoch's
history is gone); nothing refused reaches anyone; no hole is found without a notice.
"""

from __future__ import annotations

import signal
from functools import partial

import pytest
from roomcast_dev.devcluster import LocalCluster

from tests.support.cluster import QUICK_ENV, ready, until
from tests.support.delivery import in_thread
from tests.support.python_clients import across

pytestmark = pytest.mark.integration


async def test_python_clients_resume_while_redis_restarts_empty() -> None:
    with LocalCluster(3, node_env=QUICK_ENV) as cluster:
        for node in cluster.nodes:
            await until(partial(ready, node), 20, f"{node.node_id} ready")
        killed = cluster.nodes[0]  # least_conn spreads the five clients over the three nodes

        async def kill_node_and_restart_redis() -> None:
            killed.process.signal(signal.SIGKILL)
            await in_thread(cluster.kill_redis)
            await in_thread(partial(killed.process.popen.wait, 10))
            await in_thread(cluster.start_redis)

        await across(
            cluster.url, "north", kill_node_and_restart_redis, "node killed, redis restarted empty"
        )
