"""A live slot migration of busy rooms (the ``redis-cli --cluster reshard`` procedure:
IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE) under 2 senders per room at 50 messages/s each,
with members on 3 nodes that stay connected: MOVED and ASK answers, sharded subscriptions
dropped by the source (``sunsubscribe``) and re-made on the target. Every acknowledged message
reaches every member once and in order, or a ``loss`` covers it; nothing refused is delivered;
the rooms keep their epochs (a migration loses nothing, unlike a failover)."""

from __future__ import annotations

from functools import partial

import pytest
from roomcast_dev.devcluster import LocalCluster
from roomcast_dev.redis_topologies import RedisClusterTopology

from roomcast.broker.cluster_slots import sharded_channel, slot_of
from tests.support.cluster import FAST_ENV, ready, until
from tests.support.delivery import Traffic, in_thread

pytestmark = pytest.mark.integration

CLUSTER_ENV = dict(FAST_ENV, ROOMCAST_REDIS_TIMEOUT="1")


async def test_busy_rooms_migrated_live_lose_nothing() -> None:
    with RedisClusterTopology(primaries=3, replicas=0) as topology:
        env = dict(CLUSTER_ENV, **topology.node_env())
        with LocalCluster(3, redis=False, nginx=False, node_env=env) as cluster:
            for node in cluster.nodes:
                await until(partial(ready, node), 20, f"{node.node_id} ready")
            rooms = ["busy-a", "busy-b"]
            urls = [node.url for node in cluster.nodes]
            traffic = await Traffic.start(lambda i: urls[i % len(urls)], rooms)
            try:
                await traffic.more_acks(10)
                for room in rooms:
                    slot = slot_of(sharded_channel(room))
                    source = topology.owner_of(slot)
                    target = next(p for p in topology.primaries() if p.port != source.port)
                    migration = topology.migration(slot, target)
                    await in_thread(migration.begin)
                    await traffic.more_acks(5)  # MIGRATING: the keys still on the source
                    await in_thread(migration.move_keys)
                    await traffic.more_acks(5)  # the ASK window: keys on the target
                    await in_thread(migration.finish)
                    await traffic.more_acks(5)
                await traffic.finish(timeout=30)
                print(f"\nbusy rooms migrated live: {traffic.summary()}")
                traffic.check()
                epochs = {e for s in traffic.senders for e, _ in s.acked.values()}
                assert len(epochs) == len(rooms)
                assert all(not member.losses for member in traffic.members)
            finally:
                await traffic.close()
