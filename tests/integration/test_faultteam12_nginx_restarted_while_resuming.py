"""nginx stopped and started again (not reloaded) three times back to back, each restart as soon
as the previous one listens, while the Python clients it cut (readers and senders of a room,
spread over 3 nodes) are still reconnecting and resuming through it with ``since``: each
message a sender's ``wait()`` confirmed reaches every client once and in order, or a ``Gap``
covers it; a refused message reaches nobody. One restart is fault team 7's
``test_faultteam7_python_client_failover.py``.
"""

from __future__ import annotations

from functools import partial

import pytest
from roomcast_dev.devcluster import LocalCluster

from tests.support.cluster import QUICK_ENV, ready, until
from tests.support.delivery import in_thread
from tests.support.python_clients import across

pytestmark = pytest.mark.integration

RESTARTS = 3


async def test_python_clients_across_nginx_restarted_while_they_resume() -> None:
    with LocalCluster(3, node_env=QUICK_ENV) as cluster:
        for node in cluster.nodes:
            await until(partial(ready, node), 20, f"{node.node_id} ready")

        async def restart_nginx_again_and_again() -> None:
            for _ in range(RESTARTS):
                assert cluster.nginx is not None
                await in_thread(cluster.nginx.stop)
                await in_thread(cluster.start_nginx)  # returns once it answers /healthz

        what = f"nginx restarted x{RESTARTS}"
        clients = await across(cluster.url, "north", restart_nginx_again_and_again, what)
        print(f"connections lost per client: {[c.disconnects for c in clients]}")
        assert all(c.disconnects >= 1 for c in clients), "a client nginx never cut"
