"""Two faults close together: a node holding members and senders is paused (SIGSTOP: a VM
migrated, a container frozen) while Redis is SIGKILLed and restarted empty, and the other nodes'
senders go on in the rooms' new epochs; then the node runs again. Its links died with the old
Redis while it could not notice; once continued it must find that out, reconnect, and tell its
members what they lost (``loss`` ``epoch_changed``) before handing them the new epoch's messages,
which they must all get, once and in order. Its senders' messages handed to the dead Redis are
answered (``unavailable`` or ``unconfirmed``), never acknowledged and lost.
"""

from __future__ import annotations

import signal

import pytest
from roomcast_dev.devcluster import LocalCluster

from tests.support.delivery import Traffic, in_thread

pytestmark = pytest.mark.integration

ROOMS = ["north", "south"]


async def test_node_paused_across_a_redis_restart_tells_its_members(
    quick_cluster: LocalCluster,
) -> None:
    cluster = quick_cluster
    urls = [node.url for node in cluster.nodes]
    traffic = await Traffic.start(lambda i: urls[i % len(urls)], ROOMS)
    paused = cluster.nodes[0]
    try:
        await traffic.more_acks(5)
        others = [s for s in traffic.senders if s.node != paused.node_id]
        held = [m for m in traffic.members if m.node == paused.node_id]
        assert others and held and len(others) < len(traffic.senders)
        paused.process.signal(signal.SIGSTOP)
        try:
            await in_thread(cluster.kill_redis)
            await in_thread(cluster.start_redis)  # same port, nothing kept
            wanted = {s.name: len(s.acked) + 20 for s in others}
            await traffic.until(
                lambda: all(len(s.acked) >= wanted[s.name] for s in others), 30, "others' acks"
            )
        finally:
            paused.process.signal(signal.SIGCONT)
        await traffic.more_acks(10, timeout=30)
        await traffic.finish(timeout=30)
        print(f"\nnode SIGSTOPped across a Redis restart: {traffic.summary()}")
        traffic.check()
        for member in held:
            changes = [e for e in member.losses if e["reason"] == "epoch_changed"]
            assert changes, f"{member.name} on the paused node was never told"
    finally:
        await traffic.close()
