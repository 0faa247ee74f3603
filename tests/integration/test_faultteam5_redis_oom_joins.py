"""Redis over ``maxmemory`` with ``noeviction`` under 4 senders, with members on 3 nodes: joins
too are refused (``unavailable``), nothing acknowledged is lost, and once memory is freed the
refused joiner gets in and is announced. A join Redis refused did nothing (its script's first
write is the one an OOM refuses), so the room's members must not be told it left either: a
``user_left`` for somebody who never joined.
"""

from __future__ import annotations

from functools import partial

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster

from tests.support.delivery import Traffic, in_thread
from tests.support.wsclient import Client, Event

pytestmark = pytest.mark.integration

ROOMS = ["north", "south"]
NEWCOMER = "newcomer"


def refusals(traffic: Traffic) -> int:
    return sum(len(s.refused) + len(s.unconfirmed) for s in traffic.senders)


def about_newcomer(event: Event) -> bool:
    return event["type"] in ("user_joined", "user_left") and event.get("username") == NEWCOMER


async def test_joins_refused_while_redis_is_out_of_memory(quick_cluster: LocalCluster) -> None:
    cluster = quick_cluster
    admin = redis.Redis(port=cluster.redis_port)
    urls = [node.url for node in cluster.nodes]
    watchers = [await Client.connect(url) for url in urls]
    newcomer = await Client.connect(urls[1])
    traffic = await Traffic.start(lambda i: urls[i % len(urls)], ROOMS)
    try:
        for index, watcher in enumerate(watchers):
            await watcher.join(ROOMS[0], f"watcher{index}")
        await traffic.more_acks(5)
        before = refusals(traffic)
        used = int((await in_thread(partial(admin.info, "memory")))["used_memory"])
        await in_thread(partial(admin.config_set, "maxmemory-policy", "noeviction"))
        await in_thread(partial(admin.config_set, "maxmemory", str(used - 10_000)))
        await newcomer.send(type="join", room=ROOMS[0], username=NEWCOMER, id="oom")
        refused = await newcomer.recv_type("error", id="oom")
        assert refused["code"] == "unavailable", refused
        await traffic.until(lambda: refusals(traffic) > before + 10, 10, "refusals")
        await in_thread(partial(admin.config_set, "maxmemory", "256mb"))
        await in_thread(partial(admin.config_set, "maxmemory-policy", "volatile-ttl"))
        await newcomer.join(ROOMS[0], NEWCOMER)
        first = [await watcher.recv_where(about_newcomer) for watcher in watchers]
        await traffic.more_acks(10)
        await traffic.finish()
        print(
            f"\nout of memory, joins: {traffic.summary()}; first event about the refused "
            f"joiner on each node: {[event['type'] for event in first]}"
        )
        traffic.check()
        assert [event["type"] for event in first] == ["user_joined"] * 3, first
    finally:
        await traffic.close()
        for client in [*watchers, newcomer]:
            await client.close()
        admin.close()
