"""A room's hash slot migrated LIVE between primaries of a REAL Redis Cluster (Debian's
redis-server, 3 primaries + 3 replicas) while REAL roomcast nodes serve it: chat continues across
the move with nothing silently lost, offsets and epoch survive it, and commands that hit the slot
mid-migration (ASK, TRYAGAIN) are answered.

The migration is the real procedure (``SlotMigration``): SETSLOT IMPORTING on the target,
MIGRATING on the source, GETKEYSINSLOT + MIGRATE … KEYS, then SETSLOT NODE on the target, the
source and the other primary; the source then drops the room's sharded subscribers with an
unprompted ``sunsubscribe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from roomcast_dev.devcluster import LocalCluster
from roomcast_dev.redis_topologies import RedisClusterTopology, RedisServer, SlotMigration

from roomcast.broker.cluster_slots import sharded_channel, slot_of
from roomcast.broker.scripts import room_keys
from tests.support.cluster import FAST_ENV, ready, until
from tests.support.wsclient import Client, Event, scaled

pytestmark = pytest.mark.integration

CLUSTER_ENV = dict(FAST_ENV, ROOMCAST_HISTORY_SIZE="5000", ROOMCAST_REDIS_TIMEOUT="2")
NUMBERED = re.compile(r"m(\d+)")


@pytest.fixture(scope="module")
def topology() -> Iterator[RedisClusterTopology]:
    with RedisClusterTopology(primaries=3, replicas=1) as running:
        yield running


@pytest.fixture(scope="module")
def nodes(topology: RedisClusterTopology) -> Iterator[LocalCluster]:
    env = dict(CLUSTER_ENV, **topology.node_env())
    with LocalCluster(2, redis=False, nginx=False, node_env=env) as cluster:
        yield cluster


@pytest.fixture
async def ready_nodes(nodes: LocalCluster) -> LocalCluster:
    for node in nodes.nodes:
        await until(functools.partial(ready, node), 20, f"{node.node_id} ready")
    return nodes


def fresh_room() -> str:
    return "mig-" + uuid.uuid4().hex[:10]


def room_slot(room: str) -> int:
    return slot_of(sharded_channel(room))


def migration_away(topology: RedisClusterTopology, room: str) -> SlotMigration:
    """The room's slot, to be moved from its owner to the next primary."""
    slot = room_slot(room)
    source = topology.owner_of(slot)
    target = next(s for s in topology.primaries() if s.port != source.port)
    return topology.migration(slot, target)


def shard_subscribers(server: RedisServer, room: str) -> int:
    reply: Any = server.run("PUBSUB", "SHARDNUMSUB", sharded_channel(room))
    return int(reply[1])


def error_count(server: RedisServer, prefix: str) -> int:
    """How often ``server`` answered an error starting with ``prefix`` (INFO errorstats)."""
    stats: dict[str, Any] = server.client().info("errorstats")
    entry = stats.get(f"errorstat_{prefix}")
    return int(entry["count"]) if entry else 0


@dataclass
class Listener:
    """Reads everything one client receives, in the background: chat messages of the room in
    arrival order, and ``unavailable`` errors."""

    client: Client
    room: str
    messages: list[Event] = field(default_factory=list)
    unavailable: list[Event] = field(default_factory=list)
    others: list[Event] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def start(self) -> Listener:
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        while True:
            event = await self.client.recv(timeout=3600)
            if event["type"] == "message" and event.get("room") == self.room:
                self.messages.append(event)
            elif event["type"] == "error" and event.get("code") == "unavailable":
                self.unavailable.append(event)
            else:
                self.others.append(event)

    def texts(self) -> list[str]:
        return [m["text"] for m in self.messages]

    def has(self, text: str) -> bool:
        return any(m["text"] == text for m in self.messages)

    async def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
        deadline = asyncio.get_running_loop().time() + scaled(timeout)
        while not condition():
            assert self._task is not None and not self._task.done(), self._task
            assert asyncio.get_running_loop().time() < deadline, f"timed out: {what}"
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


@dataclass
class ContinuousSender:
    """Sends ``m0``, ``m1``, … every ``pace`` seconds without waiting for any answer."""

    client: Client
    room: str
    pace: float = 0.004
    sent: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> ContinuousSender:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while not self._stop.is_set():
            text = f"m{len(self.sent)}"
            await self.client.send(type="message", room=self.room, text=text)
            self.sent.append(text)
            await asyncio.sleep(self.pace)

    async def sent_at_least(self, count: int, timeout: float = 20) -> None:
        deadline = asyncio.get_running_loop().time() + scaled(timeout)
        while len(self.sent) < count:
            assert self._task is not None and not self._task.done(), self._task
            assert asyncio.get_running_loop().time() < deadline, "sender stalled"
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


async def stored_history(client: Client, room: str) -> dict[str, Any]:
    await client.send(type="history", room=room, limit=10_000)
    return await client.recv_type("history", room=room)


async def test_chat_continues_across_a_live_slot_migration(
    topology: RedisClusterTopology, ready_nodes: LocalCluster
) -> None:
    node_a, node_b = ready_nodes.nodes[0], ready_nodes.nodes[1]
    room = fresh_room()
    migration = migration_away(topology, room)
    source, target = migration.source, migration.target
    third = next(s for s in topology.primaries() if s.port not in (source.port, target.port))

    alice = await Client.connect(node_a.url)  # the sender
    carol = await Client.connect(node_a.url)  # a member on the sender's node
    bob = await Client.connect(node_b.url)  # a member on the other node
    epoch = (await alice.join(room, "alice"))["epoch"]
    await carol.join(room, "carol")
    await bob.join(room, "bob")
    listeners = {
        name: Listener(c, room).start()
        for name, c in [("alice", alice), ("carol", carol), ("bob", bob)]
    }
    sender = ContinuousSender(alice, room).start()
    phases: dict[str, int] = {}
    try:
        await sender.sent_at_least(100)
        phases["before"] = len(sender.sent)
        await asyncio.to_thread(migration.begin)  # MIGRATING/IMPORTING, keys still on the source
        phases["begun"] = len(sender.sent)
        await sender.sent_at_least(len(sender.sent) + 50)
        moved = await asyncio.to_thread(migration.move_keys)  # the ASK window opens
        phases["keys_moved"] = len(sender.sent)
        # seq, epoch, history, presence (and, when they exist, the history's byte count and
        # the room's rate bucket): one slot by hash tag.
        assert moved >= 4, moved
        await sender.sent_at_least(len(sender.sent) + 50)
        await asyncio.to_thread(migration.finish)  # SETSLOT NODE everywhere
        phases["finished"] = len(sender.sent)
        await sender.sent_at_least(len(sender.sent) + 150)
    finally:
        await sender.stop()
    sent = sender.sent

    # A last message from the other node, once the sender stopped: it reaches everyone.
    await bob.send(type="message", room=room, text="after")
    for name, listener in listeners.items():
        await listener.wait_for(functools.partial(listener.has, "after"), f"{name}: 'after'")
    # Refusals may be settled a little after the last echo: wait for the sender's accounts to
    # close (a silent loss leaves them open; the assertions below then say which were lost).
    sender_view = listeners["alice"]
    with contextlib.suppress(AssertionError):
        await sender_view.wait_for(
            lambda: len(sender_view.texts()) - 1 + len(sender_view.unavailable) >= len(sent),
            "every send echoed or refused",
            timeout=5,
        )

    auditor = await Client.connect(node_b.url)
    await auditor.join(room, "auditor")
    history = await stored_history(auditor, room)
    stored = [
        m for m in history["messages"] if NUMBERED.fullmatch(m["text"]) or m["text"] == "after"
    ]
    offsets = [m["offset"] for m in history["messages"]]
    stored_texts = [m["text"] for m in stored]
    numbered = [t for t in stored_texts if t != "after"]
    stored_set = set(stored_texts)
    refused = len(sender_view.unavailable)
    not_stored = [t for t in sent if t not in stored_set]
    report: dict[str, Any] = {
        "sent": len(sent),
        "phases (messages sent when the step began)": phases,
        "stored": len(numbered),
        "stored_out_of_send_order": sum(
            1 for a, b in itertools.pairwise(numbered) if int(a[1:]) > int(b[1:])
        ),
        "refused_unavailable": refused,
        "not_stored": len(not_stored),
        "silently_lost": max(0, len(not_stored) - refused),
        "refused_but_stored": max(0, refused - len(not_stored)),
    }
    for name, listener in listeners.items():
        texts = listener.texts()
        report[f"{name}_received"] = len(texts)
        report[f"{name}_missed_live"] = len(stored_set - set(texts))
        report[f"{name}_duplicates"] = len(texts) - len(set(texts))
        report[f"{name}_out_of_order"] = sum(
            1 for a, b in itertools.pairwise(listener.messages) if a["offset"] >= b["offset"]
        )
    print("\nlive slot migration:", report)

    assert offsets == list(range(1, len(offsets) + 1)), "a hole or a duplicate in the history"
    assert {m["epoch"] for m in history["messages"]} == {epoch}, "the epoch changed"
    assert numbered == sorted(numbered, key=lambda t: int(t[1:])), f"out of send order: {report}"

    # Exactly once, in order, at every member: what each received IS the room's history.
    for name, listener in listeners.items():
        assert listener.texts() == stored_texts, f"{name}: {report}"
        assert {m["epoch"] for m in listener.messages} == {epoch}
    # Every message not stored was refused to the sender: silent loss is zero.
    assert len(not_stored) <= refused, report

    # The room now lives on the target only: keys and sharded subscribers.
    seq, epoch_key, history_key, presence = room_keys(room)
    assert int(source.run("CLUSTER", "COUNTKEYSINSLOT", str(migration.slot))) == 0
    assert target.client().exists(seq, epoch_key, history_key, presence) == 4
    await until(
        lambda: shard_subscribers(target, room) == 2, 10, "both nodes subscribed on the target"
    )
    assert shard_subscribers(source, room) == 0
    assert shard_subscribers(third, room) == 0

    for listener in listeners.values():
        await listener.stop()
    for client in (alice, carol, bob, auditor):
        await client.close()


async def receive_messages(client: Client, room: str, count: int) -> list[Event]:
    return [await client.recv_type("message", room=room) for _ in range(count)]


async def test_a_join_with_since_after_the_migration_recovers_history(
    topology: RedisClusterTopology, ready_nodes: LocalCluster
) -> None:
    node_a, node_b = ready_nodes.nodes[0], ready_nodes.nodes[1]
    room = fresh_room()
    migration = migration_away(topology, room)
    alice = await Client.connect(node_a.url)
    epoch = (await alice.join(room, "alice"))["epoch"]
    carol = await Client.connect(node_b.url)
    await carol.join(room, "carol")
    for index in range(10):
        await alice.send(type="message", room=room, text=f"m{index}")
    seen = await receive_messages(carol, room, 10)
    assert [m["offset"] for m in seen] == list(range(1, 11))
    await carol.close()  # node B no longer serves the room: it has to find the new owner later

    await asyncio.to_thread(migration.run)
    for index in range(10, 20):
        await alice.send(type="message", room=room, text=f"m{index}")
    echoes = await receive_messages(alice, room, 20)
    assert [m["offset"] for m in echoes] == list(range(1, 21)), "offsets continue"
    assert {m["epoch"] for m in echoes} == {epoch}, "the epoch did not change"

    carol = await Client.connect(node_b.url)
    await carol.send(type="join", room=room, username="carol", since={"offset": 10, "epoch": epoch})
    joined = await carol.recv_type("joined", room=room)
    assert joined["recovered"] is True, joined
    assert (joined["epoch"], joined["offset"]) == (epoch, 20)
    replayed = await receive_messages(carol, room, 10)
    assert [(m["offset"], m["text"]) for m in replayed] == [(i + 1, f"m{i}") for i in range(10, 20)]
    await alice.send(type="message", room=room, text="live again")
    live = await carol.recv_type("message", room=room)
    assert (live["offset"], live["text"]) == (21, "live again")
    assert shard_subscribers(migration.target, room) == 2
    assert shard_subscribers(migration.source, room) == 0
    for client in (alice, carol):
        await client.close()


async def test_commands_hitting_the_slot_mid_migration_are_answered(
    topology: RedisClusterTopology, ready_nodes: LocalCluster
) -> None:
    node_a, node_b = ready_nodes.nodes[0], ready_nodes.nodes[1]
    room = fresh_room()
    migration = migration_away(topology, room)
    source = migration.source
    seq, epoch_key, history_key, presence = room_keys(room)
    alice = await Client.connect(node_a.url)
    epoch = (await alice.join(room, "alice"))["epoch"]
    bob = await Client.connect(node_b.url)
    await bob.join(room, "bob")
    for index in range(5):
        await alice.send(type="message", room=room, text=f"m{index}")
    await receive_messages(bob, room, 5)
    await receive_messages(alice, room, 5)

    await asyncio.to_thread(migration.begin)
    # Keys partly moved: a script over seq, epoch and history gets TRYAGAIN from the source
    # (it holds some of them only) until the operator's MIGRATE moved the rest.
    assert await asyncio.to_thread(migration.move_keys, [history_key, presence]) == 2
    # A chat message meeting TRYAGAIN is refused, not sent again later: a retry could land
    # after the sender's next message and reorder the two. The sender is told, by its id.
    tryagain = error_count(source, "TRYAGAIN")
    await alice.send(type="message", room=room, text="refused mid-migration", id="tryagain-1")
    refused = await alice.recv_type("error", id="tryagain-1")
    assert (refused["code"], refused["room"]) == ("unavailable", room), refused
    assert error_count(source, "TRYAGAIN") > tryagain
    tryagain = error_count(source, "TRYAGAIN")
    await bob.send(type="history", room=room)
    await until(lambda: error_count(source, "TRYAGAIN") > tryagain, 5, "history to meet TRYAGAIN")
    # seq and epoch (and the history's byte count, the rate bucket when it exists)
    assert await asyncio.to_thread(migration.move_keys) >= 2
    history = await bob.recv_type("history", room=room)
    assert (history["epoch"], history["offset"]) == (epoch, 5)
    assert [m["text"] for m in history["messages"]] == [f"m{i}" for i in range(5)]
    assert not [e for e in bob._buffer if e["type"] == "error"], list(bob._buffer)

    # The ASK window: every key on the target, the slot still the source's.
    assert migration.keys_left() == []
    asks = error_count(source, "ASK")
    dave = await Client.connect(node_b.url)
    joined = await dave.join(room, "dave")  # its join script runs on the importing node
    assert (joined["epoch"], joined["offset"]) == (epoch, 5)
    assert error_count(source, "ASK") > asks
    await bob.send(type="presence", room=room)
    presence_event = await bob.recv_type("presence", room=room)
    assert sorted(m["username"] for m in presence_event["members"]) == ["alice", "bob", "dave"]
    await alice.send(type="message", room=room, text="in the window")
    echo = await alice.recv_type("message", room=room)
    assert (echo["offset"], echo["text"], echo["epoch"]) == (6, "in the window", epoch)

    await asyncio.to_thread(migration.finish)
    await alice.send(type="message", room=room, text="after")
    for client in (alice, bob, dave):
        got: list[Event] = []
        while not got or got[-1]["text"] != "after":
            got.append(await client.recv_type("message", room=room))
        expected = [(6, "in the window"), (7, "after")]
        if client is alice:
            expected = expected[1:]
        assert [(m["offset"], m["text"]) for m in got] == expected, got
    assert int(source.run("CLUSTER", "COUNTKEYSINSLOT", str(migration.slot))) == 0
    assert migration.target.client().exists(seq, epoch_key, history_key, presence) == 4
    for client in (alice, bob, dave):
        await client.close()
