"""A room's hash slot migrated live twice in a row (to a second shard, then back to its first
owner: IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE each time) during a burst of WebSocket sends
(2 senders at 200 messages/s each), with HTTP posts to every node and through nginx and an event
stream of the room open on every node and through nginx. The scripts meet ASK and MOVED, the
sharded subscription moves twice. A migration loses nothing: every acknowledged message and
accepted post reaches every WebSocket member and stream once and in order, with no ``loss``,
the room keeps its epoch, and history holds each at the position its members were sent.
A single migration under steady WebSocket traffic is ``test_redis_cluster_migration_traffic``.
"""

from __future__ import annotations

from functools import partial

import pytest
from redis.cluster import ClusterNode, RedisCluster
from roomcast_dev.devcluster import LocalCluster
from roomcast_dev.redis_topologies import RedisClusterTopology

from roomcast.broker.cluster_slots import sharded_channel, slot_of
from tests.integration.test_redis_cluster_shard_down import room_on
from tests.support.cluster import QUICK_ENV, ready, until
from tests.support.delivery import Traffic, in_thread
from tests.support.event_streams import follow_stream
from tests.support.posts import Poster, checked_after, epoch

pytestmark = pytest.mark.integration

BURST_INTERVAL_S = 0.005


async def test_a_slot_migrated_there_and_back_in_a_burst_loses_nothing() -> None:
    with RedisClusterTopology(primaries=3, replicas=0) as topology:
        env = dict(QUICK_ENV, **topology.node_env())
        with LocalCluster(3, redis=False, node_env=env) as cluster:
            for node in cluster.nodes:
                await until(partial(ready, node), 20, f"{node.node_id} ready")
            first, second = topology.primaries()[:2]
            room = room_on(topology, first, "moved")
            slot = slot_of(sharded_channel(room))
            ports = [node.port for node in cluster.nodes] + [cluster.nginx_port]
            followers = [await follow_stream(p, room, f"{room}-sse-{p}") for p in ports]
            traffic = await Traffic.start(
                lambda i: cluster.nodes[i % 3].url, [room], interval=BURST_INTERVAL_S
            )
            traffic.members.extend(f.member for f in followers)
            poster = Poster(ports, [room])
            seeds = [ClusterNode("127.0.0.1", p.port) for p in topology.primaries()]  # type: ignore[no-untyped-call]
            admin = RedisCluster(startup_nodes=seeds)
            try:
                await traffic.more_acks(10)
                epoch_before = await in_thread(lambda: epoch(admin, room))
                for target in (second, first):
                    migration = topology.migration(slot, target)
                    await in_thread(migration.begin)
                    await traffic.more_acks(20)  # MIGRATING: keys still on the source
                    await in_thread(migration.move_keys)
                    await traffic.more_acks(20)  # ASK: keys on the target, slot not yet
                    await in_thread(migration.finish)
                    await traffic.more_acks(20)  # MOVED, the subscription re-made
                assert topology.owner_of(slot).port == first.port
                await checked_after(traffic, poster, admin, "slot migrated there and back")
                assert all(not m.losses for m in traffic.members), "a migration told a loss"
                assert await in_thread(lambda: epoch(admin, room)) == epoch_before
                posted = len(poster.accepted(room))
                assert posted > 0, "no post accepted across two migrations"
            finally:
                admin.close()
                await poster.close()
                await traffic.close()
