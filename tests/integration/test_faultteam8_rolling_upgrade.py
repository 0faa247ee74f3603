"""A rolling upgrade from the previous release (``ce72fca``) with both versions on one Redis:
what every operator does, and what the envelope's join/leave ``cause``, the events' ``user_id``,
the heartbeat timed by Redis's ``TIME`` and the gap filler changed must survive.

Two nodes of the previous release and one of this one behind real nginx (on standalone Redis,
and on Redis Cluster), senders and members on all three (the chaos suite's clients, reconnecting
through nginx with ``since``), and one member and sender per room connected straight to the new
node for the whole run: it sees every join and leave.
The mixed cluster runs more than two presence TTLs (every node's reaper judging every other's
heartbeats), then each old node is drained and replaced on its port by a node of this release.
Judged: every acknowledged message reaches every member once, in order, or the member is told;
nobody is told that the steady members left or joined twice; every member's joins and leaves
as the steady members count them add up to its connections at the end; no node reaped another;
what is sent once every node runs this release carries ``user_id``.

The Python client (``roomcast.client``) across versions: a client that met a node of this
release (its ``welcome`` names its ``user_id``) and then lands on a node of the previous one
(a canary taken back out, a reconnect during the upgrade) gets no ``user_id`` in its own echoes:
each message it sends there must still be confirmed, not reported ``unconfirmed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from roomcast_dev.devcluster import LocalCluster, NodeProcess
from roomcast_dev.redis_topologies import RedisClusterTopology
from websockets.asyncio.client import ClientConnection, connect

from roomcast.client import RoomcastClient
from tests.chaos.checker import check
from tests.chaos.clients import stop_clients
from tests.chaos.runner import _await_caught_up
from tests.integration.test_faultteam5_rolling_restart import ENV, Client, drained, more_acks
from tests.support.cluster import ready, until
from tests.support.previous_release import PREVIOUS_RELEASE, export_previous_release, start_old
from tests.support.wsclient import scaled

pytestmark = pytest.mark.integration

ROOMS = ("east", "west")
SEND_INTERVAL = 0.02  # about 50 messages/s per sender
PRESENCE_TTL = float(ENV["ROOMCAST_PRESENCE_TTL"])
# At ~50 messages/s per sender: more than two presence TTLs of mixed traffic, so every node's
# reaper (it judges others after a TTL of its own heartbeats) reads the other version's entries.
MIXED_ACKS = int(2.5 * PRESENCE_TTL * 50)
ACKS_BETWEEN_STEPS = 40
ACKS_AFTER_UPGRADE = 40


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``node/`` of the previous release, exported from git: nodes started with it on their
    PYTHONPATH run that code."""
    yield export_previous_release(tmp_path_factory.mktemp("previous-release"))


class PresenceClient(Client):
    """The rolling restart's client, also keeping the joins and leaves it is told of."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.presence: list[dict[str, Any]] = []

    def _on_event(self, ws: ClientConnection, event: Any) -> None:
        kind = event.get("type") if isinstance(event, dict) else None
        if kind in ("user_joined", "user_left", "presence_changed"):
            self.presence.append(event)
        super()._on_event(ws, event)


async def welcome_of(node: NodeProcess) -> dict[str, Any]:
    async with connect(node.url) as ws:
        event: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), scaled(5)))
        return event


def net_presence(told: list[dict[str, Any]], username: str) -> list[int]:
    """The running count of ``username``'s connections in a steady member's room as the joins
    and leaves it was ``told`` say (it joined before everybody: it starts at 0)."""
    counts, count = [], 0
    for event in told:
        if event.get("username") != username:
            continue
        count += 1 if event["type"] == "user_joined" else -1 if event["type"] == "user_left" else 0
        counts.append(count)
    return counts


def presence_adds_up(steady: list[PresenceClient], clients: list[PresenceClient]) -> bool:
    """Every client is counted once, connected, by the steady member of its room."""
    return all(
        net_presence(observer.presence, client.name)[-1:] == [1]
        for observer in steady
        for client in clients
        if client.room == observer.room
    )


def reaps(cluster: LocalCluster) -> list[str]:
    return [line for n in cluster.nodes for line in n.process.lines if "reaped a dead node" in line]


def sent_after(client: Client, since: float) -> set[str]:
    return {
        str(e.event["text"])
        for e in client.log.entries
        if e.direction == "out" and e.event.get("type") == "message" and e.t >= since
    }


@pytest.mark.parametrize("topology", ["standalone", "cluster"])
async def test_rolling_upgrade_from_the_previous_release(
    previous_release: Path, topology: str
) -> None:
    with contextlib.ExitStack() as stack:
        env = dict(ENV)
        if topology == "cluster":
            shards = stack.enter_context(RedisClusterTopology(primaries=3, replicas=0))
            env.update(shards.node_env())
        cluster = LocalCluster(3, redis=topology == "standalone", node_env=env)
        stack.callback(cluster.stop)
        if topology == "standalone":
            cluster.start_redis()
        olds = [start_old(cluster, previous_release) for _ in range(2)]
        new = cluster.start_node()
        cluster.start_nginx()
        assert "user_id" not in await welcome_of(olds[0]), "not the previous release"
        assert "user_id" in await welcome_of(new)
        await run_upgrade(cluster, previous_release, olds, new)


async def run_upgrade(
    cluster: LocalCluster, source: Path, olds: list[NodeProcess], new: NodeProcess
) -> None:
    # Straight to the new node, the one never restarted: members and senders all along.
    steady = [
        PresenceClient(f"steady-{room}", room, new.url, random.Random(room), SEND_INTERVAL)
        for room in ROOMS
    ]
    clients: list[PresenceClient] = []
    for room in ROOMS:
        for index in range(2):
            name = f"{room}-sender{index}"
            rng = random.Random(name)
            clients.append(PresenceClient(name, room, cluster.url, rng, SEND_INTERVAL))
        for index in range(3):
            name = f"{room}-reader{index}"
            clients.append(PresenceClient(name, room, cluster.url, random.Random(name)))
    everyone = [*steady, *clients]
    senders: list[Client] = [c for c in everyone if c.send_interval is not None]
    tasks = [asyncio.create_task(c.run()) for c in steady]
    try:
        async with asyncio.timeout(scaled(30)):
            await asyncio.gather(*(c.joined.wait() for c in steady))
        tasks += [asyncio.create_task(c.run()) for c in clients]
        async with asyncio.timeout(scaled(30)):
            await asyncio.gather(*(c.joined.wait() for c in clients))
        old_ids = {n.node_id for n in olds}
        assert {c.node for c in senders} & old_ids, "no sender on a node of the previous release"
        assert {c.node for c in senders} - old_ids, "no sender on a node of this release"
        await more_acks(senders, MIXED_ACKS)
        for old in olds:
            await drained(old)
            upgraded = await asyncio.to_thread(cluster.start_node, {"ROOMCAST_PORT": str(old.port)})
            await until(partial(ready, upgraded), 20, f"{upgraded.node_id} ready")
            await more_acks(senders, ACKS_BETWEEN_STEPS)
        upgraded_at = time.monotonic()
        await more_acks(senders, ACKS_AFTER_UPGRADE)
        for client in senders:
            client.sending = False
        caught_up = await _await_caught_up(everyone, scaled(20))
        # The last rejoins' user_joined may still be on their way to the steady members.
        with contextlib.suppress(AssertionError):
            await until(partial(presence_adds_up, steady, clients), 5, "presence told")
        # Before anybody stops (their own leaves are then true).
        told_at_end = {client.name: list(client.presence) for client in everyone}
    finally:
        await stop_clients(everyone, tasks)

    verdict = check(c.log for c in everyone)
    counters = verdict.counters()
    told: Counter[str] = Counter(e["type"] for events in told_at_end.values() for e in events)
    without_id = Counter(
        "user_id" in e.event
        for c in steady
        for e in c.log.entries
        if e.direction == "in" and e.event.get("type") == "message"
    )
    print(
        f"\nrolling upgrade {PREVIOUS_RELEASE} -> this release: acknowledged "
        f"{counters['acknowledged']}, delivered {counters['delivered']} of {counters['owed']} "
        f"owed, missing {counters['missing']}, duplicates {counters['duplicates']}, lost with "
        f"notice {counters['lost_with_notice']}, unconfirmed {counters['unconfirmed']}; presence "
        f"events {dict(told)}; messages to the steady members with/without user_id "
        f"{without_id[True]}/{without_id[False]}; reaps {len(reaps(cluster))}"
    )
    assert verdict.ok, (verdict.failures, verdict.examples)
    assert caught_up, "a member never caught up (or never rejoined)"
    assert verdict.lost_with_notice == 0, verdict.examples
    # Heartbeats on the two clocks: nobody was taken for dead (every stop was a drain).
    assert not reaps(cluster), reaps(cluster)
    # Presence: the steady members never left, and were announced once (to each other).
    for name, events in told_at_end.items():
        for event in events:
            if str(event.get("username", "")).startswith("steady-"):
                assert event["type"] == "user_joined", (name, event)
        joins = Counter(e.get("username") for e in events if e["type"] == "user_joined")
        assert all(joins[s.name] <= 1 for s in steady), (name, joins)
    assert not told["presence_changed"], "joins and leaves coalesced at this churn"
    for observer in steady:
        for client in clients:
            if client.room == observer.room:
                counts = net_presence(told_at_end[observer.name], client.name)
                assert counts and min(counts) >= 0 and counts[-1] == 1, (client.name, counts)
    # Once every node runs this release, every message carries its writer's user_id.
    late = {text for s in senders for text in sent_after(s, upgraded_at)}
    late_events = [
        e.event
        for c in steady
        for e in c.log.entries
        if e.direction == "in" and e.event.get("type") == "message" and e.event["text"] in late
    ]
    assert late_events and all("user_id" in e for e in late_events), late_events[:3]
    assert without_id[False] and without_id[True], without_id


async def test_python_client_confirms_its_messages_on_a_previous_release_node(
    previous_release: Path,
) -> None:
    """The client met this release first (it knows its user_id), then its node is replaced on
    the same port by one of the previous release (no user_id in any event)."""
    cluster = LocalCluster(1, node_env=ENV, nginx=False)
    try:
        cluster.start()
        node = cluster.nodes[0]
        client = RoomcastClient(node.url, "carol", confirm_timeout=scaled(5))
        async with client:
            await client.join("lobby")
            assert client.user_id is not None
            first = await (await client.send("lobby", "on this release")).wait()
            assert first.user_id == client.user_id
            node.process.signal(signal.SIGTERM)
            code = await asyncio.to_thread(node.process.popen.wait, scaled(15))
            assert code == 0, node.process.tail()
            older = await asyncio.to_thread(start_old, cluster, previous_release, node.port)
            await until(partial(ready, older), 20, f"{older.node_id} ready")
            # Queued until the client is back and joined, then written on the older node.
            outcomes = []
            for index in range(5):
                outgoing = await client.send("lobby", f"on the previous release {index}")
                outcomes.append(asyncio.ensure_future(outgoing.wait()))
            done = await asyncio.gather(*outcomes, return_exceptions=True)
            failures = [d for d in done if isinstance(d, BaseException)]
            print(f"\n5 messages through a node of {PREVIOUS_RELEASE}: {failures or 'confirmed'}")
            assert not failures, failures
            assert client.node == older.node_id
            assert all(d.user_id is None for d in done if not isinstance(d, BaseException))
    finally:
        cluster.stop()
