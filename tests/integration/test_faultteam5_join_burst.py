"""A class arriving at once: 100 people join one room, spread over 3 nodes, while 4 senders talk
in it at 50 messages/s. docs/protocol.md ("A churning client"): joins and leaves are coalesced only
past a burst of 100 at more than 10 a second, so every member on every node must be told each of
the 100 by name (``user_joined``), and never get a ``presence_changed`` for them; the chat must
go on (every acknowledged message to every member, see tests/support/delivery.py).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from roomcast_dev.devcluster import LocalCluster

from tests.support.delivery import Traffic
from tests.support.wsclient import Client, Event

pytestmark = pytest.mark.integration

ROOM = "assembly"
ARRIVING = 100  # the burst docs/protocol.md promises to tell name by name


async def names_announced(watcher: Client, expected: set[str]) -> tuple[set[str], list[Event]]:
    """The names ``watcher`` was told joined, until it has all of ``expected``; and every
    ``presence_changed`` it got meanwhile (none is the promise)."""
    told: set[str] = set()
    notices: list[Event] = []

    def presence(event: Event) -> bool:
        return event["type"] in ("user_joined", "presence_changed") and event["room"] == ROOM

    while not expected <= told:
        try:
            event = await watcher.recv_where(presence, timeout=20)
        except TimeoutError:
            break
        if event["type"] == "presence_changed":
            notices.append(event)
            break  # coalesced: the names that follow will not be told one by one
        else:
            told.add(event["username"])
    return told, notices


async def test_a_hundred_joins_over_three_nodes_are_announced_by_name(
    fresh_cluster: LocalCluster,
) -> None:
    cluster = fresh_cluster
    urls = [node.url for node in cluster.nodes]
    watchers = [await Client.connect(url) for url in urls]
    arriving: list[Client] = []
    traffic = None
    try:
        for index, watcher in enumerate(watchers):
            await watcher.join(ROOM, f"watcher{index}")
        traffic = await Traffic.start(lambda i: urls[i % 3], [ROOM], readers=0, senders=4)
        # The room's 7 members joined over a second before the class arrives (50 messages per
        # sender, each sender paced at 50 a second): the burst of 100 refilled at 10 a second.
        # (Their joins count in it: the same 100 right after them get a few presence_changed.)
        await traffic.more_acks(50)
        arriving = [await Client.connect(urls[i % 3]) for i in range(ARRIVING)]
        names = {f"pupil{i}" for i in range(ARRIVING)}
        started = time.monotonic()
        await asyncio.gather(
            *(
                client.send(type="join", room=ROOM, username=f"pupil{i}")
                for i, client in enumerate(arriving)
            )
        )
        for client in arriving:
            await client.recv_type("joined", room=ROOM, timeout=20)
        joined_in = time.monotonic() - started
        results = await asyncio.gather(*(names_announced(w, names) for w in watchers))
        await traffic.more_acks(5)
        await traffic.finish()
        for watcher, (told, notices) in zip(watchers, results, strict=True):
            print(
                f"\n{ARRIVING} joins over 3 nodes in {joined_in:.2f} s under 4 senders: "
                f"{watcher.node} told {len(told & names)} by name, {len(notices)} "
                f"presence_changed ({traffic.summary()})"
            )
        for watcher, (told, notices) in zip(watchers, results, strict=True):
            assert not notices, f"{watcher.node}: {notices}"
            assert names <= told, f"{watcher.node} not told of {sorted(names - told)}"
        traffic.check()
    finally:
        if traffic is not None:
            await traffic.close()
        for client in [*watchers, *arriving]:
            await client.close()
