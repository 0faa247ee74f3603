"""Sentinel quorum lost: every sentinel SIGKILLed while the primary (and its replica) stay up,
under steady traffic; then a node restarted while no sentinel answers; then the sentinels come
back.

Without sentinels nothing can fail over, but nothing needs to: the running node keeps its links
to the primary and keeps serving (every message acknowledged meanwhile delivered once and in
order to every member). A node started meanwhile cannot learn where the primary is: it must say
so (not ready on ``/readyz``) rather than serve, and become ready once the sentinels are back.
Checked by offset over every member, through all three phases.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import pytest
from roomcast_dev.devcluster import LocalCluster
from roomcast_dev.redis_topologies import SentinelTopology

from tests.support.cluster import QUICK_ENV, not_ready, ready, until
from tests.support.delivery import Traffic

pytestmark = pytest.mark.integration

ROOMS = ["quorum-east", "quorum-west"]
CLIENT_TYPES = ("normal", "pubsub")


@pytest.fixture
def sentinel_nodes() -> Iterator[tuple[SentinelTopology, LocalCluster]]:
    with SentinelTopology(replicas=1, sentinels=3) as topology:
        env = dict(QUICK_ENV, **topology.node_env())
        with LocalCluster(2, redis=False, nginx=False, node_env=env) as cluster:
            yield topology, cluster


async def test_sentinels_all_lost_running_node_serves_restarted_node_waits(
    sentinel_nodes: tuple[SentinelTopology, LocalCluster],
) -> None:
    topology, cluster = sentinel_nodes
    serving, spare = cluster.nodes
    for node in cluster.nodes:
        await until(partial(ready, node), 20, f"{node.node_id} ready")
    # Every member on the node that keeps running: the spare is the one restarted.
    traffic = await Traffic.start(serving.url, ROOMS)
    try:
        await traffic.more_acks(5)
        for sentinel in topology.sentinels:
            sentinel.kill()
        await traffic.more_acks(20)
        assert ready(serving), "the running node stopped serving without its sentinels"

        spare.process.stop()
        restarted = cluster.start_node()
        await until(partial(not_ready, restarted), 10, f"{restarted.node_id} not ready")
        await traffic.more_acks(20)
        for index in range(10):  # its readiness asked over some 20 more acks: never ready
            await traffic.more_acks(2)
            assert not_ready(restarted), f"ready with no sentinel to name the primary ({index})"

        for sentinel in list(topology.sentinels):
            topology.restart_sentinel(sentinel)
        await until(partial(ready, restarted), 30, f"{restarted.node_id} ready, sentinels back")
        await traffic.more_acks(20)
        await traffic.finish(timeout=30)
        print(f"\nall sentinels killed, a node restarted, sentinels back: {traffic.summary()}")
        traffic.check()
        assert not any(member.losses for member in traffic.members), "loss with no failover"
    finally:
        await traffic.close()


async def test_links_dropped_while_no_sentinel_answers_lose_nothing_in_silence(
    sentinel_nodes: tuple[SentinelTopology, LocalCluster],
) -> None:
    """The running node's Redis links cut (``CLIENT KILL``, as an idle timeout or a proxy would)
    while no sentinel answers: it cannot reconnect to a primary it is no longer told about.
    Every send is answered all the same, and once the sentinels are back every acknowledged
    message reaches every member or the member is told."""
    topology, cluster = sentinel_nodes
    serving = cluster.nodes[0]
    for node in cluster.nodes:
        await until(partial(ready, node), 20, f"{node.node_id} ready")
    traffic = await Traffic.start(serving.url, ROOMS)
    primary = topology.primary()
    try:
        await traffic.more_acks(5)
        for sentinel in topology.sentinels:
            sentinel.kill()
        await traffic.more_acks(5)
        killed = sum(int(primary.run("CLIENT", "KILL", "TYPE", kind)) for kind in CLIENT_TYPES)
        await until(partial(not_ready, serving), 10, f"{serving.node_id} not ready, cut off")
        held_up = [len(s.refused) + len(s.unconfirmed) for s in traffic.senders]
        await traffic.until(
            lambda: [len(s.refused) + len(s.unconfirmed) for s in traffic.senders] > held_up,
            20,
            "sends answered while cut off",
        )
        for sentinel in list(topology.sentinels):
            topology.restart_sentinel(sentinel)
        await until(partial(ready, serving), 30, f"{serving.node_id} ready, sentinels back")
        await traffic.more_acks(20)
        await traffic.finish(timeout=30)
        print(f"\n{killed} links killed with no sentinel up: {traffic.summary()}")
        traffic.check()
    finally:
        await traffic.close()
