"""What an operator (or a managed Redis service) does to a running Redis besides killing it, under
steady traffic with members on 3 nodes that stay connected: the delivery guarantee must hold
(see ``tests/support/delivery.py``), the client must be told of every refusal, and the nodes
must come back to acknowledging messages by themselves.
"""

from __future__ import annotations

from functools import partial

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster, free_port

from roomcast.broker import scripts
from tests.support.address_move import replica_behind_an_address
from tests.support.delivery import Traffic, finish_refusals_true, in_thread

pytestmark = pytest.mark.integration

ROOMS = ["north", "south"]


async def test_script_cache_flushed_under_traffic(quick_cluster: LocalCluster) -> None:
    """``SCRIPT FLUSH`` (or a managed Redis that drops its script cache) answers every EVALSHA
    with NOSCRIPT: the messages it refuses are answered ``unavailable``, the nodes load their
    scripts again and acknowledge what follows (they kept refusing everything for good)."""
    cluster = quick_cluster
    admin = redis.Redis(port=cluster.redis_port)
    traffic = await Traffic.start(cluster.url, ROOMS)
    try:
        await traffic.more_acks(5)
        for _ in range(3):
            await in_thread(admin.script_flush)
            await traffic.more_acks(5)
        await traffic.finish()
        print(f"\nSCRIPT FLUSH x3: {traffic.summary()}")
        traffic.check()
        # Redis kept its data: nothing was lost, so nothing is announced lost.
        assert all(not member.losses for member in traffic.members)
        shas = [script.sha.decode() for script in scripts.FENCED.all]
        assert await in_thread(partial(admin.script_exists, *shas)) == [True] * len(shas)
    finally:
        await traffic.close()
        admin.close()


async def test_primary_demoted_behind_its_address_under_traffic() -> None:
    """A managed Redis fails over behind one address: the replica is promoted, new connections
    to the address reach it, and the old primary, demoted but cut off from the new one, keeps
    the nodes' connections. Every publish on the old connections is refused READONLY: the node
    must connect again, its command link (it kept refusing every message for good) and its
    subscriber link too (on the old primary it heard nothing the new one published)."""
    async with replica_behind_an_address(ROOMS) as service:
        traffic = service.traffic
        await in_thread(partial(service.new.replicaof, "NO", "ONE"))
        service.relay.redis_port = service.new_port
        # Demoted, and cut off from the new primary (a partition): it never hears of the new
        # primary's publications.
        await in_thread(partial(service.old.replicaof, "127.0.0.1", free_port()))
        await traffic.more_acks(10)
        await traffic.finish()
        print(f"\nprimary demoted behind its address: {traffic.summary()}")
        traffic.check()


def refusals(traffic: Traffic) -> int:
    return sum(len(sender.refused) + len(sender.unconfirmed) for sender in traffic.senders)


async def test_writes_paused_longer_than_the_timeout(quick_cluster: LocalCluster) -> None:
    """``CLIENT PAUSE 3000 WRITE`` (what a manual failover or a resharding tool does) holds every
    script three Redis timeouts: the senders are answered ``unavailable`` or ``unconfirmed``
    (never left waiting), a held script that runs after its deadline publishes nothing, and
    the nodes acknowledge again once writes resume."""
    cluster = quick_cluster
    admin = redis.Redis(port=cluster.redis_port)
    traffic = await Traffic.start(cluster.url, ROOMS)
    try:
        await traffic.more_acks(5)
        before = refusals(traffic)
        await in_thread(partial(admin.client_pause, 3000, all=False))
        await traffic.until(lambda: refusals(traffic) > before, 10, "a refusal")
        await traffic.more_acks(10)
        await traffic.finish()
        print(f"\nCLIENT PAUSE 3000 WRITE: {traffic.summary()}")
        traffic.check()
        assert all(not member.losses for member in traffic.members)
    finally:
        await traffic.close()
        admin.close()


async def test_out_of_memory_refuses_and_half_applies_nothing(quick_cluster: LocalCluster) -> None:
    """Redis over ``maxmemory`` with ``noeviction``: each publish script's first write is
    refused (OOM), so the message is answered ``unavailable`` and nothing of it is kept;
    once memory is back, messages are acknowledged again and no offset is missing."""
    cluster = quick_cluster
    admin = redis.Redis(port=cluster.redis_port)
    traffic = await Traffic.start(cluster.url, ROOMS)
    try:
        await traffic.more_acks(5)
        before = refusals(traffic)
        used = int((await in_thread(partial(admin.info, "memory")))["used_memory"])
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", str(used - 10_000))
        await traffic.until(lambda: refusals(traffic) > before + 10, 10, "refusals")
        admin.config_set("maxmemory", "256mb")
        admin.config_set("maxmemory-policy", "volatile-ttl")
        await traffic.more_acks(10)
        await finish_refusals_true(traffic, admin, ROOMS, "out of memory")
    finally:
        await traffic.close()
        admin.close()


async def test_room_keys_evicted_under_the_shipped_policy(quick_cluster: LocalCluster) -> None:
    """Memory pressure under the shipped ``volatile-ttl`` policy evicts rooms' history, counters
    and epochs (the soonest to expire go first): members are told with ``loss`` events, no
    offset names two messages, and nothing acknowledged goes missing in silence."""
    cluster = quick_cluster
    admin = redis.Redis(port=cluster.redis_port)
    traffic = await Traffic.start(cluster.url, ROOMS)
    try:
        await traffic.more_acks(5)
        used = int((await in_thread(partial(admin.info, "memory")))["used_memory"])
        admin.config_set("maxmemory", str(used + 200_000))
        filler = admin.pipeline(transaction=False)
        for index in range(100):  # outlive every room key: they are evicted first
            filler.set(f"filler:{index}", "x" * 10_000, ex=10 * 86_400)
        await in_thread(filler.execute)
        await traffic.until(lambda: all(m.losses for m in traffic.members), 20, "loss events")
        admin.config_set("maxmemory", "256mb")
        await traffic.more_acks(10)
        await traffic.finish()
        print(f"\nroom keys evicted: {traffic.summary()}")
        traffic.check()
    finally:
        await traffic.close()
        admin.close()


async def test_flushall_under_traffic(quick_cluster: LocalCluster) -> None:
    """``FLUSHALL`` with the nodes connected: every member is told the room's epoch changed,
    and the room goes on from offset 1 of a new epoch."""
    cluster = quick_cluster
    admin = redis.Redis(port=cluster.redis_port)
    traffic = await Traffic.start(cluster.url, ROOMS)
    try:
        await traffic.more_acks(5)
        await in_thread(admin.flushall)
        await traffic.more_acks(10)
        await traffic.finish()
        print(f"\nFLUSHALL: {traffic.summary()}")
        traffic.check()
        for member in traffic.members:
            assert [e["reason"] for e in member.losses] == ["epoch_changed"], member.losses
    finally:
        await traffic.close()
        admin.close()
