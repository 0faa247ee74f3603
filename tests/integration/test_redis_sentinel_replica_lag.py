"""A Sentinel failover onto a replica that lacks the primary's last acknowledged writes:
``CLIENT PAUSE ALL`` on the replica holds the replication stream unprocessed while the primary
acknowledges more messages, then the primary is SIGKILLed (its unprocessed stream dies with the
link). Members that stay connected get every acknowledged message once, in order, or a ``loss``
event; no offset is acknowledged twice (see ``docs/guarantees.md``, Sentinel failover)."""

from __future__ import annotations

from functools import partial

import pytest
from roomcast_dev.devcluster import LocalCluster
from roomcast_dev.redis_topologies import SentinelTopology

from tests.support.cluster import FAST_ENV, ready, until
from tests.support.delivery import Traffic, in_thread
from tests.support.failovers import hold_replication, repl_offset

pytestmark = pytest.mark.integration

ROOMS = ["north", "south"]
QUICK_ENV = dict(FAST_ENV, ROOMCAST_REDIS_TIMEOUT="1")


async def test_sentinel_failover_onto_a_lagging_replica_is_told_to_members() -> None:
    with SentinelTopology(replicas=1, sentinels=3) as topology:
        env = dict(QUICK_ENV, **topology.node_env())
        with LocalCluster(3, redis=False, node_env=env) as cluster:
            for node in cluster.nodes:
                await until(partial(ready, node), 20, f"{node.node_id} ready")
            traffic = await Traffic.start(cluster.url, ROOMS)
            try:
                await traffic.more_acks(5)
                primary, replica_offset = await hold_replication(topology)
                await traffic.more_acks(10)
                primary_offset = await in_thread(
                    partial(repl_offset, primary, "master_repl_offset")
                )
                assert replica_offset < primary_offset
                acked_before_kill = traffic.acks()
                await in_thread(primary.kill)
                await in_thread(partial(topology.wait_for_failover, primary.port))
                await traffic.more_acks(10, timeout=40)
                reused = traffic.reused_positions()
                assert not reused, f"{len(reused)} offsets acknowledged twice: {reused}"
                await traffic.finish(timeout=30)
                print(
                    f"\nsentinel failover with replica lag ({primary_offset - replica_offset} "
                    f"bytes unreplicated, {acked_before_kill} acked before the kill): "
                    f"{traffic.summary()}"
                )
                traffic.check()
                for member in traffic.members:
                    changes = [e for e in member.losses if e["reason"] == "epoch_changed"]
                    assert len(changes) == 1, member.losses
            finally:
                await traffic.close()
