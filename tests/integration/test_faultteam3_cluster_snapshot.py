"""A Redis Cluster shard primary restarted on an older snapshot (its RDB, or an AOF with
``appendfsync everysec``): the shard's rooms' offset counters go back, their epochs do not. The
writes acknowledged after the snapshot are gone, and the next messages would be acknowledged at
their offsets under the same epoch: every member that already got those offsets live would drop
the new messages as duplicates, and nobody would be told.

No failover happens (a shard without a replica, or a primary back within
``cluster-node-timeout``), so the failover fence (``master_replid2``) does not apply. The shard
comes back either as the same node (its ``nodes.conf``: its identity, role and slots) restarted
on the snapshot, or as the operator restores a backup onto a new machine: a new cluster node
(new ports, no ``nodes.conf``: a new identity) started on the snapshot, the dead identity
forgotten and its slots given to the new node (``restore_backup``); then the room's lineage
names a node the cluster no longer knows. Members stay connected on 3 nodes; each must get
every acknowledged message once, in order, or a ``loss`` event (``epoch_changed``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
from roomcast_dev.devcluster import LocalCluster, timeout_factor
from roomcast_dev.redis_topologies import RedisClusterTopology, RedisServer

from roomcast.broker.cluster_slots import sharded_channel, slot_of
from tests.support.cluster import FAST_ENV, ready, until
from tests.support.delivery import Traffic, in_thread

# Up to four Redis starts, the cluster made stable twice, 40 acknowledgements under load.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(int(240 * timeout_factor()))]

CLUSTER_ENV = dict(FAST_ENV, ROOMCAST_REDIS_TIMEOUT="1")


def room_on(topology: RedisClusterTopology, primary: RedisServer) -> str:
    for index in range(10_000):
        room = f"snaproom-{index}"
        if topology.owner_of(slot_of(sharded_channel(room))).port == primary.port:
            return room
    raise AssertionError("no room name hashes to the primary")


def restart_in_place(topology: RedisClusterTopology, victim: RedisServer) -> None:
    topology.restart(victim)
    topology.wait_stable()


def restore_on_new_node(topology: RedisClusterTopology, victim: RedisServer) -> None:
    restored = topology.restore_backup(victim)
    assert restored.port != victim.port


@pytest.mark.parametrize("come_back", [restart_in_place, restore_on_new_node])
async def test_shard_primary_restarted_on_an_older_snapshot_is_told_to_members(
    come_back: Callable[[RedisClusterTopology, RedisServer], None],
) -> None:
    with RedisClusterTopology(primaries=3, replicas=0) as topology:
        env = dict(CLUSTER_ENV, **topology.node_env())
        with LocalCluster(3, redis=False, nginx=False, node_env=env) as cluster:
            for node in cluster.nodes:
                await until(partial(ready, node), 20, f"{node.node_id} ready")
            victim = topology.primaries()[0]
            room = room_on(topology, victim)
            urls = [node.url for node in cluster.nodes]
            traffic = await Traffic.start(lambda i: urls[i % len(urls)], [room])
            try:
                await traffic.more_acks(10)
                await in_thread(partial(victim.run, "SAVE"))
                await traffic.more_acks(10)  # acknowledged, delivered, then lost by the crash
                acked_before_crash = traffic.acks()
                await in_thread(victim.kill)
                await in_thread(partial(come_back, topology, victim))
                await traffic.more_acks(20, timeout=40)
                reused = traffic.reused_positions()
                assert not reused, f"{len(reused)} offsets acknowledged twice: {reused}"
                await traffic.finish(timeout=30)
                print(
                    f"\ncluster primary back on an older snapshot, {come_back.__name__} "
                    f"({acked_before_crash} "
                    f"acked before the crash): {traffic.summary()}"
                )
                traffic.check()
                epochs = {e for s in traffic.senders for e, _ in s.acked.values()}
                assert len(epochs) == 2  # the restarted primary started a new epoch
                for member in traffic.members:
                    changes = [e for e in member.losses if e["reason"] == "epoch_changed"]
                    assert len(changes) == 1, member.losses
            finally:
                await traffic.close()
