"""A Redis Cluster shard primary dies with writes its replica never got: replication is
asynchronous, so the promoted replica lacks messages the old primary acknowledged (and published
to the connected members). Members that stay connected must get every acknowledged message once,
in order, or a ``loss`` event; the new primary must never hand a lost message's offset to
another text under the same epoch (members would take it for a duplicate and drop it).

The lag is made real: ``CLIENT PAUSE ALL`` on the replica holds the replication stream it
receives unprocessed, and a primary SIGKILLed meanwhile takes those writes with it (the replica
drops a dead primary's unprocessed stream)."""

from __future__ import annotations

from functools import partial

import pytest
from roomcast_dev.devcluster import LocalCluster, timeout_factor
from roomcast_dev.redis_topologies import RedisClusterTopology, RedisServer

from roomcast.broker.cluster_slots import sharded_channel, slot_of
from tests.support.cluster import FAST_ENV, ready, until
from tests.support.delivery import Traffic, in_thread

pytestmark = pytest.mark.integration

CLUSTER_ENV = dict(FAST_ENV, ROOMCAST_REDIS_TIMEOUT="1")


def room_on(topology: RedisClusterTopology, primary: RedisServer) -> str:
    for index in range(10_000):
        room = f"lagroom-{index}"
        if topology.owner_of(slot_of(sharded_channel(room))).port == primary.port:
            return room
    raise AssertionError("no room name hashes to the primary")


def repl_offset(server: RedisServer, field: str) -> int:
    return int(server.client().info("replication")[field])


async def test_shard_failover_losing_unreplicated_acked_writes_is_told_to_members() -> None:
    with RedisClusterTopology(primaries=3, replicas=1) as topology:
        env = dict(CLUSTER_ENV, **topology.node_env())
        with LocalCluster(3, redis=False, nginx=False, node_env=env) as cluster:
            for node in cluster.nodes:
                await until(partial(ready, node), 20, f"{node.node_id} ready")
            victim = topology.primaries()[0]
            (replica,) = topology.replicas_of(victim)
            room = room_on(topology, victim)
            urls = [node.url for node in cluster.nodes]
            traffic = await Traffic.start(lambda i: urls[i % len(urls)], [room])
            try:
                await traffic.more_acks(10)
                # Held long enough to outlast the acks below and the kill; it ends by itself.
                pause_ms = int(4000 * timeout_factor())
                replica_offset = await in_thread(partial(repl_offset, replica, "slave_repl_offset"))
                await in_thread(partial(replica.run, "CLIENT", "PAUSE", str(pause_ms), "ALL"))
                await traffic.more_acks(10)
                # (The paused replica answers nothing, INFO included: its offset is the one
                # read before the pause, the stream it got since stays unprocessed.)
                primary_offset = await in_thread(partial(repl_offset, victim, "master_repl_offset"))
                assert replica_offset < primary_offset
                acked_before_kill = traffic.acks()
                await in_thread(victim.kill)
                slot = slot_of(sharded_channel(room))
                await in_thread(partial(topology.wait_for_new_owner, slot, victim))
                await traffic.more_acks(20, timeout=40)
                reused = traffic.reused_positions()
                assert not reused, f"{len(reused)} offsets acknowledged twice: {reused}"
                await traffic.finish(timeout=30)
                print(
                    f"\ncluster failover with replica lag ({primary_offset - replica_offset} "
                    f"bytes unreplicated, {acked_before_kill} acked before the kill): "
                    f"{traffic.summary()}"
                )
                traffic.check()
                epochs = {e for s in traffic.senders for e, _ in s.acked.values()}
                assert len(epochs) == 2  # the promoted replica started a new epoch
                for member in traffic.members:
                    changes = [e for e in member.losses if e["reason"] == "epoch_changed"]
                    assert len(changes) == 1, member.losses
            finally:
                await traffic.close()
