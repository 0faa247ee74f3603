"""Redis closing the nodes' links under steady traffic. At ``maxclients`` (an operator lowered
it, or other clients took every slot) when the nodes' subscriber links drop: they cannot connect
again (Redis answers "max number of clients reached" and closes), while the command links they
kept still work. Messages sent meanwhile must be refused (the nodes would not hear them), never
acknowledged and lost; once slots are free, the nodes subscribe again and every acknowledged
message reaches every member once and in order (Redis kept its data: nothing needs to be
announced lost). Or the command links killed instead, with replies in flight."""

from __future__ import annotations

from functools import partial

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster

from tests.support.delivery import Traffic, in_thread

pytestmark = pytest.mark.integration

ROOMS = ["north", "south"]


async def test_subscriber_links_kept_out_by_maxclients(quick_cluster: LocalCluster) -> None:
    cluster = quick_cluster
    admin = redis.Redis(port=cluster.redis_port)
    traffic = await Traffic.start(cluster.url, ROOMS)
    try:
        await traffic.more_acks(5)
        subscribers = len(await in_thread(partial(admin.client_list, "pubsub")))
        connected = int((await in_thread(partial(admin.info, "clients")))["connected_clients"])
        await in_thread(partial(admin.config_set, "maxclients", str(connected - subscribers)))
        killed = await in_thread(partial(admin.client_kill_filter, _type="pubsub"))
        assert killed == subscribers >= 3
        refused = {s.name: len(s.refused) + 5 for s in traffic.senders}
        await traffic.until(
            lambda: all(len(s.refused) >= refused[s.name] for s in traffic.senders),
            20,
            "refusals while no node can subscribe",
        )
        kept_out = len(await in_thread(partial(admin.client_list, "pubsub")))
        await in_thread(partial(admin.config_set, "maxclients", "10000"))
        await traffic.more_acks(10, timeout=30)
        await traffic.finish(timeout=30)
        print(f"\nsubscriber links kept out by maxclients: {traffic.summary()}")
        assert kept_out == 0
        traffic.check()
        losses = {m.name: m.losses for m in traffic.members if m.losses}
        assert not losses, losses
    finally:
        await traffic.close()
        await in_thread(partial(admin.config_set, "maxclients", "10000"))
        admin.close()


async def test_command_links_killed_under_traffic(quick_cluster: LocalCluster) -> None:
    """``CLIENT KILL TYPE normal`` three times: every node's command link dies with publish
    scripts in flight (their replies lost: each is looked up in history before it is answered)
    while the subscriber links live on."""
    cluster = quick_cluster
    admin = redis.Redis(port=cluster.redis_port)
    traffic = await Traffic.start(cluster.url, ROOMS)
    try:
        await traffic.more_acks(5)
        for _ in range(3):
            killed = await in_thread(partial(admin.client_kill_filter, _type="normal"))
            assert killed >= 3  # a command link per node, at least
            await traffic.more_acks(5, timeout=30)
        await traffic.finish(timeout=30)
        print(f"\nCLIENT KILL TYPE normal x3: {traffic.summary()}")
        traffic.check()
        losses = {m.name: m.losses for m in traffic.members if m.losses}
        assert not losses, losses
    finally:
        await traffic.close()
        admin.close()
