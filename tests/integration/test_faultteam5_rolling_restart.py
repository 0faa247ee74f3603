"""A rolling restart of every node, one after the other, under 4 senders at 50 messages/s with
members spread over the 3 nodes behind real nginx: what an operator does for each release.

Each node is drained (SIGTERM: not ready, every message it handled answered, 1001 to its
clients) and replaced, either on its own port (a supervisor restarting it) or by a new node on a
new port with nginx reloaded twice (the new node added, then the old one removed: the upstream
list changes under traffic, as in a deployment whose pods get new addresses). The clients are the
chaos suite's (tests/chaos/clients.py): they reconnect through nginx with jittered backoff and
rejoin with ``since``. Judged by its checker: every acknowledged message reaches every member
once, in order, or the member is told; nothing refused is delivered; every member is connected
and joined at the end, and presence names exactly them.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter
from functools import partial
from typing import Any

import pytest
from roomcast_dev.devcluster import LocalCluster, NodeProcess
from websockets.asyncio.client import ClientConnection

from tests.chaos.checker import check
from tests.chaos.clients import ChaosClient, stop_clients
from tests.chaos.cluster import NODE_ENV, PRESENCE_TTL_SECONDS
from tests.chaos.presence import convergence
from tests.chaos.runner import _await_caught_up
from tests.support.cluster import SHARED_LIMITS_OFF, ready, until
from tests.support.wsclient import scaled

pytestmark = pytest.mark.integration

ROOMS = ("east", "west")
SENDERS_PER_ROOM = 2
READERS_PER_ROOM = 3
SEND_INTERVAL = 0.02  # seconds, jittered ±50 % by the client: about 50 messages/s per sender
ACKS_BETWEEN_STEPS = 40
# The chaos suite's node settings (1 s Redis timeout, 3 s drain, 2000 messages of history), and
# no shared per-client rate: every client here comes from 127.0.0.1.
ENV = dict(
    NODE_ENV, **SHARED_LIMITS_OFF
)  # per sender, after each node is back: traffic flows between steps


def make_clients(url: str) -> list[Client]:
    clients = []
    for room in ROOMS:
        for index in range(SENDERS_PER_ROOM):
            name = f"{room}-sender{index}"
            clients.append(Client(name, room, url, random.Random(name), SEND_INTERVAL))
        for index in range(READERS_PER_ROOM):
            name = f"{room}-reader{index}"
            clients.append(Client(name, room, url, random.Random(name)))
    return clients


def refusals(clients: list[Client]) -> Counter[str]:
    return Counter(
        str(e.event.get("code"))
        for c in clients
        for e in c.log.entries
        if e.direction == "in" and e.event["type"] == "error"
    )


def unanswered_but_delivered(clients: list[Client]) -> list[str]:
    """Messages whose connection was closed before their answer (each close here is a drain's
    1001) that reached someone: docs/operations.md says such a message was never published."""
    answered = {
        str(e.event.get("id"))
        for c in clients
        for e in c.log.entries
        if e.direction == "in" and e.event["type"] in ("ack", "error")
    }
    unanswered = {
        str(e.event["text"])
        for c in clients
        for e in c.log.entries
        if e.direction == "out" and e.event["type"] == "message" and e.event["id"] not in answered
    }
    delivered = {
        str(e.event.get("text"))
        for c in clients
        for e in c.log.entries
        if e.direction == "in" and e.event["type"] == "message"
    }
    return sorted(unanswered & delivered)


def acks(client: ChaosClient) -> int:
    return sum(1 for e in client.log.entries if e.direction == "in" and e.event["type"] == "ack")


class Client(ChaosClient):
    """The chaos suite's client, waking the test at each event it logs."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.changed = asyncio.Event()

    def _on_event(self, ws: ClientConnection, event: Any) -> None:
        super()._on_event(ws, event)
        self.changed.set()


async def more_acks(senders: list[Client], count: int) -> None:
    """Every sender had ``count`` more messages acknowledged."""
    wanted = {s.name: acks(s) + count for s in senders}
    async with asyncio.timeout(scaled(30)):
        while not all(acks(s) >= wanted[s.name] for s in senders):
            for sender in senders:
                sender.changed.clear()
            await asyncio.wait(
                [asyncio.ensure_future(s.changed.wait()) for s in senders],
                return_when=asyncio.FIRST_COMPLETED,
            )


async def drained(node: NodeProcess) -> None:
    node.process.signal(signal.SIGTERM)
    code = await asyncio.to_thread(node.process.popen.wait, scaled(15))
    assert code == 0, node.process.tail()


async def restart_in_place(cluster: LocalCluster, old: NodeProcess) -> NodeProcess:
    await drained(old)
    new = await asyncio.to_thread(cluster.start_node, {"ROOMCAST_PORT": str(old.port)})
    await until(partial(ready, new), 20, f"{new.node_id} ready")
    return new


async def replace_with_reloads(cluster: LocalCluster, old: NodeProcess) -> NodeProcess:
    new = await asyncio.to_thread(cluster.start_node)
    await until(partial(ready, new), 20, f"{new.node_id} ready")
    await asyncio.to_thread(cluster.reload_nginx)  # the new node joins the upstream list
    await drained(old)
    await asyncio.to_thread(cluster.reload_nginx)  # the old one leaves it
    return new


@pytest.mark.parametrize("step", ["in_place", "new_ports_and_nginx_reloads"])
async def test_rolling_restart_of_every_node_under_traffic(step: str) -> None:
    restart = restart_in_place if step == "in_place" else replace_with_reloads
    with LocalCluster(3, node_env=ENV) as cluster:
        clients = make_clients(cluster.url)
        senders = [c for c in clients if c.send_interval is not None]
        tasks = [asyncio.create_task(c.run()) for c in clients]
        try:
            async with asyncio.timeout(scaled(30)):
                await asyncio.gather(*(c.joined.wait() for c in clients))
            originals = list(cluster.nodes)
            spread = {c.node for c in clients}
            assert spread == {n.node_id for n in originals}, spread
            await more_acks(senders, 10)
            began = time.monotonic()
            for old in originals:
                await restart(cluster, old)
                await more_acks(senders, ACKS_BETWEEN_STEPS)
            rolled = time.monotonic() - began
            for client in clients:
                client.sending = False
            caught_up = await _await_caught_up(clients, scaled(20))
            presence = await convergence(
                [f"http://127.0.0.1:{n.port}" for n in cluster.nodes if n.process.alive()],
                lambda: {room: {c.name for c in clients if c.room == room} for room in ROOMS},
                since=time.monotonic(),
                bound=scaled(PRESENCE_TTL_SECONDS * 4 / 3) + 1.0,
                give_up_after=scaled(3 * PRESENCE_TTL_SECONDS * 4 / 3) + 5.0,
            )
        finally:
            await stop_clients(clients, tasks)
        verdict = check(c.log for c in clients)
        reconnects = [r for c in clients for r in c.reconnects]
        times = sorted(r.seconds for r in reconnects if r.seconds is not None)
        counters = verdict.counters()
        print(
            f"\nrolling restart ({step}) in {rolled:.1f} s: acknowledged "
            f"{counters['acknowledged']}, refused {counters['refused']}, unconfirmed "
            f"{counters['unconfirmed']} {dict(refusals(clients))}, unknown fate "
            f"{counters['unknown_fate']}, delivered "
            f"{counters['delivered']} of {counters['owed']} owed, missing {counters['missing']}, "
            f"duplicates {counters['duplicates']}, lost with notice "
            f"{counters['lost_with_notice']}, reconnects {len(reconnects)} "
            f"(max {max(times, default=0):.2f} s), presence after "
            f"{presence.converged_after}"
        )
        assert verdict.ok, (verdict.failures, verdict.examples)
        assert not unanswered_but_delivered(clients), unanswered_but_delivered(clients)
        assert caught_up, "a member never caught up (or never rejoined)"
        assert presence.ok, presence
        # Every node was drained once: each of its clients had to come back at least once.
        assert len(reconnects) >= len(clients), len(reconnects)
        assert all(r.back_at is not None for r in reconnects)
        # A drain loses nothing: no acknowledged message needs a loss notice.
        assert verdict.lost_with_notice == 0, verdict.examples
