"""Red team: a node paused (SIGSTOP: a long GC pause, a VM migration, a CPU-throttled container)
longer than the presence TTL comes back with its members, and the others must hear it.

docs/guarantees.md: "A node that dies without cleanup stops its heartbeat; within
`ROOMCAST_PRESENCE_TTL` plus a third of it, another node removes its members from presence and
publishes their `user_left`". A paused node is not dead: once it runs again it sees its
heartbeat entry gone and puts its members back into presence, and they go on talking. But
nothing tells the other members: they got `user_left` for people who never left, and no
`user_joined` when they are back, so a member list kept from these events (the article's page,
the clients' `user_joined`/`user_left` events) misses them for good while their messages
arrive. Presence answers are right again; the events are not.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.adversarial.devcluster_shim import LocalCluster, scaled
from tests.adversarial.rawws import RawWebSocket
from tests.adversarial.readiness import until_ready

PRESENCE_TTL_S = 1.5


@pytest.fixture
def cluster() -> Iterator[Any]:
    env = {"ROOMCAST_PRESENCE_TTL": str(PRESENCE_TTL_S)}
    with LocalCluster(2, nginx=False, node_env=env) as running:
        yield running


async def test_members_of_a_paused_node_that_comes_back_are_announced_again(cluster: Any) -> None:
    paused_node, other_node = cluster.nodes
    for node in cluster.nodes:
        await until_ready(node)
    room = f"pause-{uuid.uuid4().hex[:8]}"
    sleeper = await RawWebSocket.connect("127.0.0.1", paused_node.port)
    watcher = await RawWebSocket.connect("127.0.0.1", other_node.port)
    try:
        await sleeper.send({"type": "join", "room": room, "username": "sleeper"})
        await sleeper.next_text(type="joined", room=room)
        await watcher.send({"type": "join", "room": room, "username": "watcher"})
        await watcher.next_text(type="joined", room=room)

        paused_node.process.signal(signal.SIGSTOP)
        try:
            # The other node reaps the paused one's members: the documented bound.
            await watcher.next_text(
                timeout=PRESENCE_TTL_S * 4 / 3 + 5, type="user_left", username="sleeper"
            )
        finally:
            paused_node.process.signal(signal.SIGCONT)

        # The sleeper is back and speaks: it is a member, and its message reaches the watcher.
        await sleeper.send({"type": "message", "text": "still here", "id": 1})
        await sleeper.next_text(timeout=10, type="ack", id=1)
        await watcher.next_text(type="message", text="still here")
        await watcher.send({"type": "presence", "id": "p"})
        listed = await watcher.next_text(type="presence", id="p")
        # Give the resumed node a few of its heartbeats to put its members back and say so.
        try:
            await watcher.next_text(
                timeout=PRESENCE_TTL_S * 2, type="user_joined", username="sleeper"
            )
            announced = True
        except TimeoutError:
            announced = False
        await watcher.send({"type": "presence", "id": "p2"})
        relisted = await watcher.next_text(type="presence", id="p2")
        events = [
            (e["type"], e.get("username"))
            for e in watcher.received.texts
            if e.get("type") in ("user_joined", "user_left", "message")
        ]
    finally:
        await sleeper.close()
        await watcher.close()
    figures = (
        f"node SIGSTOPped past the presence TTL ({PRESENCE_TTL_S} s), then SIGCONT: the "
        f"watcher's events {events}; presence when it spoke {listed['members']}, later "
        f"{relisted['members']}; sleeper announced again within "
        f"{scaled(PRESENCE_TTL_S * 2):.1f} s: {announced}"
    )
    print(figures)
    assert announced, figures
