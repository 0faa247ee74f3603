"""The nodes' Redis user may subscribe to some rooms' channels and not others (``ACL SETUSER
default resetchannels &roomcast:room:lobby-*``: an operator scoping a shared Redis): a join to a
denied room is refused, and must not cost the rooms that can be subscribed their subscriptions,
nor Redis a reconnect loop.

Redis refuses a SUBSCRIBE whole: the batch a reconnect resubscribes every wanted channel with
was refused for any one channel denied in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from functools import partial

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster, NodeProcess
from roomcast_dev.redis_topologies import RedisClusterTopology

from roomcast.broker import CONTROL_ROOM
from roomcast.broker.cluster_slots import sharded_channel
from roomcast.broker.redis import CHANNEL_PREFIX
from tests.integration.test_faultteam15_redis_acl_publish_revoked import admin_of
from tests.support.cluster import QUICK_ENV, not_ready, ready, until
from tests.support.delivery import Member, Traffic, in_thread, join_member, until_changed
from tests.support.refusals import join_answer, refusals

pytestmark = pytest.mark.integration

OPEN_ROOMS = ["lobby-east", "lobby-west"]
DENIED_ROOM = "vault"
DENIED_JOINS = 30  # any client may join any room, as often as it likes
WATCHED_ACKS = 100  # per sender, 2 s at the traffic's pace
VAULT_HEARD_S = 15  # sends, a second apart: a denied channel is asked for again every 5 s


def connects(cluster: LocalCluster) -> int:
    """Subscriber links connected again, over every node's log."""
    return sum(
        "redis connected" in line and "subscriber" in line
        for node in cluster.nodes
        for line in node.process.lines
    )


def scope_channels(admin: redis.Redis) -> None:
    """The nodes' user keeps the lobby rooms' channels and the control channel, no other."""
    admin.execute_command(  # type: ignore[no-untyped-call]
        "ACL",
        "SETUSER",
        "default",
        "resetchannels",
        f"&{CHANNEL_PREFIX}lobby-*",
        f"&{CHANNEL_PREFIX}#control",
    )


def restore_channels(admin: redis.Redis) -> None:
    admin.execute_command("ACL", "SETUSER", "default", "allchannels")  # type: ignore[no-untyped-call]


async def watch_open_rooms(cluster: LocalCluster, traffic: Traffic) -> tuple[int, int]:
    """Subscriber reconnects and open-room sends refused while the open rooms carry traffic."""
    connected, refused = connects(cluster), refusals(traffic)
    started = time.monotonic()
    served = True
    try:
        await traffic.more_acks(WATCHED_ACKS, timeout=10)
    except TimeoutError:
        served = False
    connected, refused = connects(cluster) - connected, refusals(traffic) - refused
    took = time.monotonic() - started
    print(f"{connected} subscriber reconnects, {refused} sends refused in {took:.2f} s")
    assert served, "the open rooms' senders stalled"
    return connected, refused


async def vault_heard_again(vault: list[Member]) -> None:
    sender = vault[0]
    for attempt in range(VAULT_HEARD_S):
        request_id = f"vault-back-{attempt}"
        await sender.send_message(request_id, request_id)

        def answered(request_id: str = request_id) -> bool:
            return request_id in sender.acked or request_id in sender.refused

        await until_changed([sender.changed], answered, 10)
        if request_id in sender.acked:
            break
        # Polled about once a second: the node asks for a denied channel again every 5 s.
        with contextlib.suppress(TimeoutError):
            await until_changed([sender.changed], lambda: False, 1)

    def heard() -> bool:
        return all(any(request_id == t for *_, t in m.messages) for m in vault)

    await until_changed([m.changed for m in vault], heard, 10)
    print("vault heard again on nodes", sorted(m.node for m in vault), "after", attempt + 1)


async def test_joins_to_a_denied_room_leave_the_open_rooms_heard(
    quick_cluster: LocalCluster,
) -> None:
    cluster = quick_cluster
    admin = admin_of(cluster.redis_port)
    traffic = await Traffic.start(cluster.url, OPEN_ROOMS)
    try:
        await traffic.more_acks(5)
        await in_thread(partial(scope_channels, admin))
        try:
            connected, refused = connects(cluster), refusals(traffic)
            answers = [await join_answer(cluster.url, DENIED_ROOM) for _ in range(DENIED_JOINS)]
            assert all(a["type"] == "error" and a["code"] == "unavailable" for a in answers)
            await traffic.more_acks(WATCHED_ACKS)
            connected, refused = connects(cluster) - connected, refusals(traffic) - refused
            print(f"{DENIED_JOINS} denied joins: {connected} reconnects, {refused} sends refused")
            assert connected == 0
            assert refused == 0
        finally:
            await in_thread(partial(restore_channels, admin))
        await traffic.finish()
        traffic.check()
        assert all(not member.losses for member in traffic.members)
    finally:
        await traffic.close()
        admin.close()


async def test_a_room_denied_while_subscribed_costs_no_reconnect_loop(
    quick_cluster: LocalCluster,
) -> None:
    """The vault's members joined while its channel was allowed; the right goes, then each
    node's subscriber connection is cut (a Redis failover, a proxy restart): the reconnect's
    resubscription must still hear the open rooms, and connect once, not again and again."""
    cluster = quick_cluster
    admin = admin_of(cluster.redis_port)
    vault = [await join_member(cluster.url, DENIED_ROOM, f"vault-m{i}") for i in range(3)]
    traffic = await Traffic.start(cluster.url, OPEN_ROOMS)
    try:
        await traffic.more_acks(5)
        await in_thread(partial(scope_channels, admin))
        try:
            await in_thread(partial(admin.execute_command, "CLIENT", "KILL", "TYPE", "pubsub"))
            connected, refused = await watch_open_rooms(cluster, traffic)
            assert connected <= len(cluster.nodes)
            assert refused <= 25 * len(traffic.senders)  # those sent across the cut only
        finally:
            await in_thread(partial(restore_channels, admin))
        # The right back, the vault's members hear their room again, on every node: sends are
        # refused until the node that sends has its subscription back, then delivered to all.
        await vault_heard_again(vault)
        await traffic.finish()
        traffic.check()
        assert all(not member.losses for member in traffic.members)
    finally:
        await traffic.close()
        for member in vault:
            await member.ws.close()
        await asyncio.gather(*(m.reader for m in vault if m.reader), return_exceptions=True)
        admin.close()


def scope_cluster_channels(topology: RedisClusterTopology, allowed: bool) -> None:
    """On every Redis Cluster server (ACLs are per server): the lobby rooms' sharded channels
    and the control channel only, or every channel again."""
    rules = (
        ["allchannels"]
        if allowed
        else ["resetchannels", "&rc:{lobby-*", f"&{sharded_channel(CONTROL_ROOM).decode()}"]
    )
    for server in topology.servers:
        client = redis.Redis(port=server.port)
        try:
            client.execute_command("ACL", "SETUSER", "default", *rules)  # type: ignore[no-untyped-call]
        finally:
            client.close()


async def test_cluster_joins_to_a_denied_room_leave_the_open_rooms_heard() -> None:
    """The same over Redis Cluster's sharded pub/sub (an SSUBSCRIBE a command)."""
    with RedisClusterTopology(primaries=3, replicas=0) as topology:
        env = dict(QUICK_ENV, **topology.node_env())
        with LocalCluster(3, redis=False, node_env=env) as cluster:
            traffic = await Traffic.start(cluster.url, OPEN_ROOMS)
            try:
                await traffic.more_acks(5)
                await in_thread(partial(scope_cluster_channels, topology, False))
                try:
                    connected, refused = connects(cluster), refusals(traffic)
                    answers = [await join_answer(cluster.url, DENIED_ROOM) for _ in range(10)]
                    assert all(a["type"] == "error" for a in answers), answers
                    await traffic.more_acks(WATCHED_ACKS // 2)
                    connected = connects(cluster) - connected
                    refused = refusals(traffic) - refused
                    print(f"cluster, 10 denied joins: {connected} reconnects, {refused} refused")
                    assert connected == 0
                    assert refused == 0
                finally:
                    await in_thread(partial(scope_cluster_channels, topology, True))
                await traffic.finish()
                traffic.check()
                assert all(not member.losses for member in traffic.members)
            finally:
                await traffic.close()


def deny_every_channel(admin: redis.Redis) -> None:
    admin.execute_command("ACL", "SETUSER", "default", "resetchannels")  # type: ignore[no-untyped-call]
    admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")  # type: ignore[no-untyped-call]


async def test_every_channel_denied_makes_nodes_not_ready_without_a_reconnect_loop(
    quick_cluster: LocalCluster,
) -> None:
    """No channel at all (``resetchannels``) and the subscriber links cut: the control channel
    is refused, so no node is ready; each link connects once, not again and again."""
    cluster = quick_cluster
    admin = admin_of(cluster.redis_port)
    members = [await join_member(cluster.url, room, f"{room}-m") for room in OPEN_ROOMS]
    try:
        connected = connects(cluster)
        await in_thread(partial(deny_every_channel, admin))
        try:
            for node in cluster.nodes:
                await until(partial(not_ready, node), 10, f"{node.node_id} not ready")
            # Two control subscriptions refused on every node: a second of the ask-again pace.
            for node in cluster.nodes:
                await until(partial(refused_twice, node), 10, f"{node.node_id} asked again")
            connected = connects(cluster) - connected
            print(f"every channel denied: {connected} subscriber reconnects")
            assert connected <= len(cluster.nodes)
        finally:
            await in_thread(partial(restore_channels, admin))
        for node in cluster.nodes:
            await until(partial(ready, node), 20, f"{node.node_id} ready again")
    finally:
        for member in members:
            await member.ws.close()
        await asyncio.gather(*(m.reader for m in members if m.reader), return_exceptions=True)
        admin.close()


def refused_twice(node: NodeProcess) -> bool:
    """The node's subscriber was refused at least twice (its log; sampled past ten a kind)."""
    return sum("redis refused a subscriber command" in line for line in node.process.lines) >= 2
