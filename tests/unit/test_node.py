"""Node chat logic with MemoryBroker and real Connections fed by a sans-I/O client."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from roomcast.broker import (
    BrokerUnavailable,
    FailureHandler,
    HistoryLimits,
    JoinReply,
    NotRun,
    Unconfirmed,
)
from roomcast.broker import memory as memory_module
from roomcast.broker.memory import MemoryBroker
from roomcast.core import node as node_module
from roomcast.core import ratelimit as ratelimit_module
from roomcast.core.members import Member
from roomcast.core.node import Node
from roomcast.core.ratelimit import BucketPool
from roomcast.net.transport import WebSocketServer
from roomcast.runtime.metrics import Metrics
from roomcast.wire import protocol
from roomcast.wire.envelope import pack
from roomcast.wire.recovery import Since
from tests.support.wsharness import INSTANCE, WsClient, make_settings, settle

NOW = 1_700_000_000.5
NOW_MS = 1_700_000_000_500
EPOCH = "000102030405"


class FakeWallClock:
    def __init__(self) -> None:
        self.now = NOW

    def time(self) -> float:
        return self.now


class FrozenMonotonic:
    def monotonic(self) -> float:
        return 50.0


class FixedRandom:
    """Stands in for the memory broker's epoch source: epochs are predictable."""

    def __init__(self) -> None:
        self.calls = 0

    def getrandbits(self, bits: int) -> int:
        value = bytes((self.calls + i) % 256 for i in range(bits // 8))
        self.calls += 1
        return int.from_bytes(value, "big")


@pytest.fixture(autouse=True)
def frozen_time(monkeypatch: pytest.MonkeyPatch) -> FakeWallClock:
    clock = FakeWallClock()
    monkeypatch.setattr(node_module, "time", clock)
    monkeypatch.setattr(ratelimit_module, "time", FrozenMonotonic())
    monkeypatch.setattr(memory_module, "_epoch_source", FixedRandom())
    return clock


@dataclass
class Env:
    node: Node
    broker: MemoryBroker
    server: WebSocketServer
    registry: CollectorRegistry

    def metric(self, name: str, **labels: str) -> float | None:
        value: float | None = self.registry.get_sample_value(name, labels)
        return value

    def rejected(self, code: str) -> float | None:
        return self.metric("roomcast_frames_rejected_total", code=code)

    async def connect(self) -> WsClient:
        client = WsClient(self.server)
        await settle()
        events = client.events()
        assert [e["type"] for e in events] == ["welcome"]
        return client

    async def joined(self, username: str, *rooms: str) -> WsClient:
        client = await self.connect()
        for room in rooms:
            client.send_json({"type": "join", "room": room, "username": username})
            await settle()
        return client


async def make_env(
    broker_class: type[MemoryBroker] = MemoryBroker,
    history_size: int = 100,
    node_limits: dict[str, tuple[float, int]] | None = None,
    **overrides: Any,
) -> Env:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    settings = make_settings(history_size=history_size, **overrides)
    node = Node(
        settings.node_id,
        settings.max_rooms_per_connection,
        settings.max_frame_bytes,
        metrics,
        settings.history_size,
        **(node_limits or {}),  # type: ignore[arg-type]  # only the rate keywords
        lag_timeout=settings.lag_timeout,
    )
    broker = broker_class(node.on_broker_message, limits=HistoryLimits(size=history_size))
    await broker.start()
    loop = asyncio.get_running_loop()
    server = WebSocketServer(node, settings, metrics, loop, INSTANCE)
    node.attach(broker, server.outbox)
    return Env(node, broker, server, registry)


@pytest.fixture
async def env() -> Env:
    return await make_env()


def drain(*clients: WsClient) -> None:
    for client in clients:
        client.events()


def joined_event(room: str, username: str, offset: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "type": "joined",
        "room": room,
        "username": username,
        "epoch": EPOCH,
        "offset": offset,
        **extra,
    }


def message_event(
    room: str, username: str, text: str, offset: int, timestamp: int = NOW_MS
) -> dict[str, Any]:
    return {
        "type": "message",
        "room": room,
        "username": username,
        "text": text,
        "timestamp": timestamp,
        "offset": offset,
        "epoch": EPOCH,
    }


# Opening


async def test_welcome(env: Env) -> None:
    client = WsClient(env.server)
    await settle()
    assert client.events() == [
        {
            "type": "welcome",
            "node": "test-node",
            "connection": f"{INSTANCE}-1",
            "max_rooms": 16,
            "max_frame_bytes": 65536,
        }
    ]


# The article's browser, frame for frame.


async def test_article_session(env: Env) -> None:
    john = await env.connect()
    jane = await env.connect()
    john.send_text('{"type":"join","room":"general","username":"john"}')
    await settle()
    assert john.events() == [joined_event("general", "john")]
    assert jane.events() == []
    jane.send_text('{"type":"join","room":"general","username":"jane"}')
    await settle()
    assert jane.events() == [joined_event("general", "jane")]
    assert john.events() == [{"type": "user_joined", "room": "general", "username": "jane"}]

    john.send_text('{"type":"message","text":"hi","timestamp":123}')
    await settle()
    expected = message_event("general", "john", "hi", offset=1)
    assert john.events() == [expected]
    assert jane.events() == [expected]

    jane.send_text('{"type":"typing"}')
    await settle()
    assert john.events() == [{"type": "typing", "room": "general", "username": "jane"}]
    assert jane.events() == []


# Join


async def test_join_acks_and_tells_others_only(env: Env) -> None:
    alice = await env.joined("alice", "general")
    assert alice.events() == [joined_event("general", "alice")]
    outsider = await env.joined("zed", "other")
    drain(outsider)
    bob = await env.joined("bob", "general")
    assert bob.events() == [joined_event("general", "bob")]
    assert alice.events() == [{"type": "user_joined", "room": "general", "username": "bob"}]
    assert outsider.events() == []
    assert env.broker.subscribed_rooms == {"general", "other"}
    assert env.metric("roomcast_rooms_local") == 2.0
    assert env.metric("roomcast_frames_received_total", type="join") == 3.0
    assert env.metric("roomcast_messages_published_total", type="user_joined") == 3.0


async def test_joined_carries_latest_offset(env: Env) -> None:
    alice = await env.joined("alice", "general")
    for i in range(3):
        alice.send_json({"type": "message", "text": str(i)})
    await settle()
    bob = await env.joined("bob", "general")
    assert bob.events() == [joined_event("general", "bob", offset=3)]


async def test_rejoin_acks_again_without_user_joined(env: Env) -> None:
    alice = await env.joined("alice", "general")
    bob = await env.joined("bob", "general")
    drain(alice, bob)
    bob.send_json({"type": "join", "room": "general", "username": "robert"})
    await settle()
    assert bob.events() == [{"type": "joined", "room": "general", "already": True}]
    assert alice.events() == []
    bob.send_json({"type": "message", "text": "it's me"})
    await settle()
    assert alice.events()[0]["username"] == "bob"


async def test_join_and_message_in_one_read_keep_order(env: Env) -> None:
    alice = await env.joined("alice", "general")
    drain(alice)
    bob = await env.connect()
    bob.send_json({"type": "join", "room": "general", "username": "bob"}, push=False)
    bob.send_json({"type": "message", "text": "first words"}, push=False)
    bob.push()
    await settle()
    assert bob.events() == [
        joined_event("general", "bob"),
        message_event("general", "bob", "first words", offset=1),
    ]
    assert alice.events() == [
        {"type": "user_joined", "room": "general", "username": "bob"},
        message_event("general", "bob", "first words", offset=1),
    ]


async def test_too_many_rooms() -> None:
    env = await make_env(max_rooms_per_connection=2)
    alice = await env.joined("alice", "r1", "r2")
    drain(alice)
    alice.send_json({"type": "join", "room": "r3", "username": "alice"})
    await settle()
    assert alice.events() == [
        {
            "type": "error",
            "code": "too_many_rooms",
            "reason": "a connection may be in at most 2 rooms",
            "room": "r3",
        }
    ]
    assert env.rejected("too_many_rooms") == 1.0
    assert env.node.rooms.rooms_of(alice.conn) == ["r1", "r2"]
    assert env.broker.subscribed_rooms == {"r1", "r2"}
    # Still in its old rooms, not in the refused one.
    alice.send_json({"type": "message", "text": "x", "room": "r3"})
    await settle()
    assert alice.events()[0]["code"] == "not_joined"


# Messages and typing


async def test_message_goes_to_everyone_including_sender(
    env: Env, frozen_time: FakeWallClock
) -> None:
    alice = await env.joined("alice", "general")
    bob = await env.joined("bob", "general")
    carol = await env.joined("carol", "general")
    outsider = await env.joined("zed", "elsewhere")
    drain(alice, bob, carol, outsider)
    frozen_time.now = 1_700_000_123.25
    bob.send_json({"type": "message", "text": 'héllo 😀 "q"\n', "timestamp": 1})
    await settle()
    expected = message_event("general", "bob", 'héllo 😀 "q"\n', 1, timestamp=1_700_000_123_250)
    assert alice.events() == [expected]
    assert bob.events() == [expected]
    assert carol.events() == [expected]
    assert outsider.events() == []
    assert env.metric("roomcast_frames_received_total", type="message") == 1.0
    assert env.metric("roomcast_messages_published_total", type="message") == 1.0


async def test_offsets_count_per_room(env: Env) -> None:
    alice = await env.joined("alice", "r1", "r2")
    drain(alice)
    for room in ("r1", "r1", "r2", "r1"):
        alice.send_json({"type": "message", "text": room, "room": room})
    await settle()
    assert [(e["room"], e["offset"]) for e in alice.events()] == [
        ("r1", 1),
        ("r1", 2),
        ("r2", 1),
        ("r1", 3),
    ]


async def test_typing_goes_to_others_only(env: Env) -> None:
    alice = await env.joined("alice", "general")
    bob = await env.joined("bob", "general")
    drain(alice, bob)
    alice.send_json({"type": "typing", "room": "general"})
    await settle()
    assert alice.events() == []
    assert bob.events() == [{"type": "typing", "room": "general", "username": "alice"}]
    assert env.metric("roomcast_frames_received_total", type="typing") == 1.0
    assert env.metric("roomcast_messages_published_total", type="typing") == 1.0


async def test_message_without_room_goes_to_last_joined_room(env: Env) -> None:
    alice = await env.joined("alice", "r1", "r2")
    in_r1 = await env.joined("one", "r1")
    in_r2 = await env.joined("two", "r2")
    drain(alice, in_r1, in_r2)
    alice.send_json({"type": "message", "text": "to r2"})
    await settle()
    assert [e["room"] for e in alice.events()] == ["r2"]
    assert in_r1.events() == []
    assert [e["text"] for e in in_r2.events()] == ["to r2"]
    # An explicit room wins.
    alice.send_json({"type": "message", "text": "to r1", "room": "r1"})
    await settle()
    assert [e["text"] for e in in_r1.events()] == ["to r1"]
    assert in_r2.events() == []
    # Re-joining r1 makes it current.
    alice.send_json({"type": "join", "room": "r1", "username": "alice"})
    alice.send_json({"type": "typing"})
    await settle()
    assert in_r1.events() == [{"type": "typing", "room": "r1", "username": "alice"}]


async def test_message_to_room_not_joined(env: Env) -> None:
    alice = await env.joined("alice", "general")
    bob = await env.joined("bob", "secret")
    drain(alice, bob)
    alice.send_json({"type": "message", "text": "sneaky", "room": "secret"})
    await settle()
    assert alice.events() == [
        {
            "type": "error",
            "code": "not_joined",
            "reason": "not a member of room 'secret'",
            "room": "secret",
        }
    ]
    assert bob.events() == []
    assert env.rejected("not_joined") == 1.0


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "message", "text": "hi"},
        {"type": "typing"},
        {"type": "leave"},
        {"type": "history"},
        {"type": "presence"},
    ],
)
async def test_commands_before_any_join(env: Env, frame: dict[str, str]) -> None:
    client = await env.connect()
    client.send_json(frame)
    await settle()
    assert client.events() == [
        {"type": "error", "code": "not_joined", "reason": "join a room first"}
    ]
    assert env.rejected("not_joined") == 1.0


async def test_messages_keep_order_for_everyone(env: Env) -> None:
    alice = await env.joined("alice", "general")
    bob = await env.joined("bob", "general")
    drain(alice, bob)
    for i in range(5):
        alice.send_json({"type": "message", "text": f"a{i}"})
        bob.send_json({"type": "message", "text": f"b{i}"})
    await settle()
    order = [f"{who}{i}" for i in range(5) for who in "ab"]
    alice_events, bob_events = alice.events(), bob.events()
    assert [e["text"] for e in alice_events] == order
    assert alice_events == bob_events
    assert [e["offset"] for e in alice_events] == list(range(1, 11))


# History, presence and recovery


async def test_history(env: Env) -> None:
    alice = await env.joined("alice", "general")
    for i in range(4):
        alice.send_json({"type": "message", "text": f"m{i}"})
    await settle()
    drain(alice)
    alice.send_json({"type": "history"})
    await settle()
    assert alice.events() == [
        {
            "type": "history",
            "room": "general",
            "epoch": EPOCH,
            "offset": 4,
            "messages": [message_event("general", "alice", f"m{i}", i + 1) for i in range(4)],
        }
    ]
    alice.send_json({"type": "history", "room": "general", "limit": 2})
    await settle()
    assert [m["text"] for m in alice.events()[0]["messages"]] == ["m2", "m3"]
    assert env.metric("roomcast_frames_received_total", type="history") == 2.0


async def test_history_is_bounded() -> None:
    env = await make_env(history_size=3)
    alice = await env.joined("alice", "general")
    for i in range(5):
        alice.send_json({"type": "message", "text": f"m{i}"})
    await settle()
    drain(alice)
    alice.send_json({"type": "history", "limit": 100})
    await settle()
    event = alice.events()[0]
    assert event["offset"] == 5
    assert [m["offset"] for m in event["messages"]] == [3, 4, 5]


async def test_history_of_room_not_joined(env: Env) -> None:
    alice = await env.joined("alice", "general")
    drain(alice)
    alice.send_json({"type": "history", "room": "secret"})
    await settle()
    assert alice.events()[0]["code"] == "not_joined"


async def test_presence(env: Env) -> None:
    alice = await env.joined("alice", "general")
    alice2 = await env.joined("alice", "general")  # a second tab
    bob = await env.joined("bob", "general", "other")
    drain(alice, alice2, bob)
    bob.send_json({"type": "presence", "room": "general"})
    await settle()
    assert bob.events() == [
        {
            "type": "presence",
            "room": "general",
            "members": [
                {"username": "alice", "connections": 2},
                {"username": "bob", "connections": 1},
            ],
        }
    ]
    alice2.disconnect()
    await settle()
    drain(alice, bob)
    alice.send_json({"type": "presence"})
    await settle()
    assert alice.events()[0]["members"] == [
        {"username": "alice", "connections": 1},
        {"username": "bob", "connections": 1},
    ]
    assert env.metric("roomcast_frames_received_total", type="presence") == 2.0


async def send_messages(client: WsClient, *texts: str) -> None:
    for text in texts:
        client.send_json({"type": "message", "text": text})
    await settle()


async def test_join_with_since_recovers_missed_messages(env: Env) -> None:
    alice = await env.joined("alice", "general")
    bob = await env.joined("bob", "general")
    await send_messages(alice, "one", "two")
    seen = bob.events()[-1]
    assert (seen["offset"], seen["epoch"]) == (2, EPOCH)
    bob.disconnect()
    await send_messages(alice, "three", "four")
    drain(alice)
    back = await env.connect()
    back.send_json(
        {
            "type": "join",
            "room": "general",
            "username": "bob",
            "since": {"offset": 2, "epoch": EPOCH},
        }
    )
    await settle()
    assert back.events() == [
        joined_event("general", "bob", offset=4, recovered=True),
        message_event("general", "alice", "three", 3),
        message_event("general", "alice", "four", 4),
    ]
    assert alice.events() == [{"type": "user_joined", "room": "general", "username": "bob"}]
    assert env.metric("roomcast_recoveries_total", outcome="recovered") == 1.0
    # And then it is live.
    await send_messages(alice, "five")
    assert back.events() == [message_event("general", "alice", "five", 5)]


async def test_join_with_since_up_to_date(env: Env) -> None:
    alice = await env.joined("alice", "general")
    await send_messages(alice, "one")
    back = await env.connect()
    back.send_json(
        {"type": "join", "room": "general", "username": "b", "since": {"offset": 1, "epoch": EPOCH}}
    )
    await settle()
    assert back.events() == [joined_event("general", "b", offset=1, recovered=True)]


async def test_join_with_since_from_another_epoch(env: Env) -> None:
    alice = await env.joined("alice", "general")
    await send_messages(alice, "one")
    back = await env.connect()
    back.send_json(
        {"type": "join", "room": "general", "username": "b", "since": {"offset": 0, "epoch": "x"}}
    )
    await settle()
    assert back.events() == [
        joined_event("general", "b", offset=1, recovered=False, reason="epoch_changed")
    ]
    assert env.metric("roomcast_recoveries_total", outcome="epoch_changed") == 1.0


async def test_join_with_since_too_old() -> None:
    env = await make_env(history_size=2)
    alice = await env.joined("alice", "general")
    await send_messages(alice, "1", "2", "3", "4")
    back = await env.connect()
    back.send_json(
        {
            "type": "join",
            "room": "general",
            "username": "b",
            "since": {"offset": 1, "epoch": EPOCH},
        }
    )
    await settle()
    assert back.events() == [
        joined_event("general", "b", offset=4, recovered=False, reason="too_old")
    ]
    assert env.metric("roomcast_recoveries_total", outcome="too_old") == 1.0


async def test_join_racing_a_message_gets_it_exactly_once(env: Env) -> None:
    # Bob's join and Alice's message arrive in the same loop turn: the message is already in
    # the room's history when the join reads it, and still on its way to the node's fan-out.
    alice = await env.joined("alice", "general")
    await send_messages(alice, "one")
    drain(alice)
    bob = await env.connect()
    bob.send_json(
        {
            "type": "join",
            "room": "general",
            "username": "bob",
            "since": {"offset": 1, "epoch": EPOCH},
        }
    )
    alice.send_json({"type": "message", "text": "two"})
    await settle()
    events = bob.events()
    assert events[0] == joined_event("general", "bob", offset=2, recovered=True)
    offsets = [e["offset"] for e in events if e["type"] == "message"]
    assert offsets == [2]


async def test_join_racing_a_message_without_since(env: Env) -> None:
    # joined says the room's latest offset is 2; a message with offset 2 must not follow it.
    alice = await env.joined("alice", "general")
    await send_messages(alice, "one")
    bob = await env.connect()
    bob.send_json({"type": "join", "room": "general", "username": "bob"})
    alice.send_json({"type": "message", "text": "two"})
    await settle()
    events = bob.events()
    assert events[0] == joined_event("general", "bob", offset=2)
    assert [e for e in events[1:] if e["type"] == "message" and e["offset"] <= 2] == []


# Leaving and closing


async def test_leave(env: Env) -> None:
    alice = await env.joined("alice", "r1", "general")
    bob = await env.joined("bob", "general")
    drain(alice, bob)
    alice.send_json({"type": "leave"})
    await settle()
    assert alice.events() == [{"type": "left", "room": "general"}]
    assert bob.events() == [{"type": "user_left", "room": "general", "username": "alice"}]
    assert env.node.rooms.rooms_of(alice.conn) == ["r1"]
    assert env.broker.subscribed_rooms == {"r1", "general"}  # bob is still there
    assert env.metric("roomcast_frames_received_total", type="leave") == 1.0
    assert env.metric("roomcast_messages_published_total", type="user_left") == 1.0
    # The current room falls back to r1.
    alice.send_json({"type": "message", "text": "back in r1"})
    await settle()
    assert [(e["room"], e["text"]) for e in alice.events()] == [("r1", "back in r1")]
    assert bob.events() == []


async def test_leave_last_member_unsubscribes(env: Env) -> None:
    alice = await env.joined("alice", "general", "quiet")
    drain(alice)
    assert env.metric("roomcast_rooms_local") == 2.0
    alice.send_json({"type": "leave", "room": "quiet"})
    await settle()
    assert alice.events() == [{"type": "left", "room": "quiet"}]
    assert env.broker.subscribed_rooms == {"general"}
    assert env.metric("roomcast_rooms_local") == 1.0
    # No longer in it.
    alice.send_json({"type": "typing", "room": "quiet"})
    await settle()
    assert alice.events()[0]["code"] == "not_joined"


async def test_leave_room_not_joined(env: Env) -> None:
    alice = await env.joined("alice", "general")
    drain(alice)
    alice.send_json({"type": "leave", "room": "nope"})
    await settle()
    assert alice.events() == [
        {
            "type": "error",
            "code": "not_joined",
            "reason": "not a member of room 'nope'",
            "room": "nope",
        }
    ]


async def test_close_leaves_every_room(env: Env) -> None:
    alice = await env.joined("alice", "r1", "r2", "solo")
    bob = await env.joined("bob", "r1")
    carol = await env.joined("carol", "r2")
    drain(alice, bob, carol)
    assert env.broker.subscribed_rooms == {"r1", "r2", "solo"}
    alice.disconnect()
    await settle()
    assert bob.events() == [{"type": "user_left", "room": "r1", "username": "alice"}]
    assert carol.events() == [{"type": "user_left", "room": "r2", "username": "alice"}]
    assert env.broker.subscribed_rooms == {"r1", "r2"}
    assert env.node.rooms.rooms_of(alice.conn) == []
    assert env.metric("roomcast_rooms_local") == 2.0
    assert env.metric("roomcast_messages_published_total", type="user_left") == 3.0
    bob.disconnect()
    carol.disconnect()
    await settle()
    assert env.broker.subscribed_rooms == frozenset()
    assert env.metric("roomcast_rooms_local") == 0.0
    assert env.node.rooms.room_count == 0
    assert env.metric("roomcast_connections_open") == 0.0
    assert await env.broker.presence("r1") == {}


async def test_close_by_binary_frame_leaves_rooms(env: Env) -> None:
    alice = await env.joined("alice", "general")
    bob = await env.joined("bob", "general")
    drain(alice, bob)
    alice.send_binary(b"\x01")
    await settle()
    assert alice.close_code == 1003
    assert bob.events() == [{"type": "user_left", "room": "general", "username": "alice"}]
    assert env.rejected("binary_frame") == 1.0
    assert env.node.rooms.rooms_of(alice.conn) == []


async def test_join_after_fatal_frame_in_same_read_leaves_no_trace(env: Env) -> None:
    # Binary frame then join, in one TCP read: the connection is failed and leaves its rooms;
    # the join must not put the dead connection back into a room (it would never leave again,
    # the room would stay subscribed, and its catch-up buffer would grow with room traffic).
    bob = await env.joined("bob", "general")
    drain(bob)
    mallory = await env.connect()
    mallory.send_binary(b"\x00", push=False)
    mallory.send_json({"type": "join", "room": "general", "username": "mallory"}, push=False)
    mallory.send_json({"type": "join", "room": "ghost", "username": "mallory"}, push=False)
    mallory.push()
    await settle()
    mallory.disconnect()
    await settle()
    assert mallory.close_code == 1003
    assert env.node.rooms.rooms_of(mallory.conn) == []
    assert mallory.conn not in env.node.rooms.all_members("general")
    assert env.broker.subscribed_rooms == {"general"}
    assert env.node._catch_ups == {}
    assert bob.events() == []


# Rejections: error frames and the frames_rejected metric.


@pytest.mark.parametrize(
    ("text", "code", "reason"),
    [
        ("{oops", "invalid_json", "frame is not valid JSON"),
        ("[1,2]", "invalid_frame", "frame must be a JSON object"),
        ('{"type":7}', "invalid_frame", "'type' must be a string"),
        (
            '{"type":"shout"}',
            "unknown_type",
            "unknown type 'shout'; expected one of join, leave, message, typing, history, "
            "presence, refresh",
        ),
        (
            '{"type":"join","room":"bad room","username":"x"}',
            "invalid_room",
            "'room' must be 1-64 characters of A-Z a-z 0-9 _ . : @ -",
        ),
        (
            '{"type":"join","room":"r","username":"<b>"}',
            "invalid_username",
            "'username' must be 1-32 letters, digits, spaces or . @ - _ '",
        ),
        (
            '{"type":"join","room":"r","username":"  "}',
            "invalid_username",
            "'username' must not be blank",
        ),
        ('{"type":"message","text":5}', "invalid_text", "'text' must be a string"),
        (
            '{"type":"join","room":"r","username":"x","since":5}',
            "invalid_since",
            '\'since\' must be {"offset": N, "epoch": E}',
        ),
        ('{"type":"history","limit":0}', "invalid_limit", "'limit' must be a whole number 1-10000"),
    ],
)
async def test_bad_frames_get_error_and_are_counted(
    env: Env, text: str, code: str, reason: str
) -> None:
    alice = await env.joined("alice", "general")
    bob = await env.joined("bob", "general")
    drain(alice, bob)
    alice.send_text(text)
    await settle()
    assert alice.events() == [{"type": "error", "code": code, "reason": reason}]
    assert bob.events() == []
    assert env.rejected(code) == 1.0
    assert alice.close_code is None
    # The connection keeps working.
    alice.send_json({"type": "message", "text": "still here"})
    await settle()
    assert [e["text"] for e in bob.events()] == ["still here"]


async def test_each_rejection_counted_once(env: Env) -> None:
    client = await env.joined("alice", "general")
    drain(client)
    for _ in range(3):
        client.send_text("nope")
    client.send_text("[]")
    await settle()
    assert [e["code"] for e in client.events()] == ["invalid_json"] * 3 + ["invalid_frame"]
    assert env.rejected("invalid_json") == 3.0
    assert env.rejected("invalid_frame") == 1.0
    assert env.rejected("unknown_type") is None


async def test_rate_limit_rejections_counted() -> None:
    env = await make_env(rate_limit_burst=2)
    client = await env.joined("alice", "general")  # uses one token
    drain(client)
    for _ in range(3):
        client.send_json({"type": "typing"})
    await settle()
    assert (
        client.events()
        == [{"type": "error", "code": "rate_limited", "reason": "too many frames; slow down"}] * 2
    )
    assert env.rejected("rate_limited") == 2.0
    client.send_json({"type": "typing"})  # strike 3 > burst 2: flooding
    assert client.close_code == 1008
    assert env.rejected("flood") == 1.0
    assert env.rejected("rate_limited") == 2.0


async def test_invalid_utf8_and_too_big_counted() -> None:
    env = await make_env(max_frame_bytes=1024)
    a = await env.connect()
    a.send_text(b"\xff")
    assert a.close_code == 1007
    b = await env.connect()
    b.send_text(b"x" * 2000)
    assert b.close_code == 1009
    assert env.rejected("invalid_utf8") == 1.0
    assert env.rejected("frame_too_big") == 1.0


async def test_member_over_the_send_bound_lags_then_catches_up_from_history() -> None:
    env = await make_env(send_buffer_bytes=4096)
    alice = await env.joined("alice", "general")
    bob = await env.joined("bob", "general")
    drain(alice, bob)
    bob.transport.write_buffer_size = 4096  # its socket is backed up to the bound
    alice.send_json({"type": "message", "text": "hello"})
    await settle()
    assert bob.conn.lagging and bob.close_code is None
    # While it lags, room traffic skips it (typing is ephemeral and lost for it).
    alice.send_json({"type": "message", "text": "second"})
    alice.send_json({"type": "typing"})
    alice.send_json({"type": "message", "text": "third"})
    await settle()
    # Its socket drains: what it missed comes from history, then live traffic again.
    bob.transport.write_buffer_size = 0
    bob.conn.resume_writing()
    await settle()
    assert not bob.conn.lagging
    alice.send_json({"type": "message", "text": "fourth"})
    await settle()
    assert [e.get("text") for e in bob.events() if e["type"] == "message"] == [
        "hello", "second", "third", "fourth",
    ]  # fmt: skip
    assert env.metric("roomcast_lags_total", outcome="lagged") == 1.0
    assert env.metric("roomcast_lags_total", outcome="replayed") == 2.0
    assert env.metric("roomcast_lags_total", outcome="caught_up") == 1.0
    assert not env.metric("roomcast_slow_consumer_drops_total")


async def test_lag_resumes_after_what_the_join_delivered_in_a_room_with_history() -> None:
    env = await make_env(history_size=3, send_buffer_bytes=4096)
    alice = await env.joined("alice", "general")
    for n in range(5):  # history before bob joins: offsets 1-5, 3 kept
        alice.send_json({"type": "message", "text": f"old{n}"})
        await settle()
    # The room empties here: its messages came, as far as this node knows, from elsewhere.
    alice.send_json({"type": "leave", "room": "general"})
    await settle()
    bob = await env.joined("bob", "general", "other")
    carol = await env.joined("carol", "other")
    alice.send_json({"type": "join", "room": "general", "username": "alice"})
    await settle()
    drain(alice, bob, carol)
    bob.transport.write_buffer_size = 4096
    carol.send_json({"type": "message", "room": "other", "text": "starts the lag"})
    await settle()
    assert bob.conn.lagging
    alice.send_json({"type": "message", "room": "general", "text": "missed"})
    await settle()
    bob.transport.write_buffer_size = 0
    bob.conn.resume_writing()
    await settle()
    # Only what came after its join is replayed; nothing it had counts as a gap.
    assert not bob.conn.lagging and bob.close_code is None
    texts = [e.get("text") for e in bob.events() if e["type"] == "message"]
    assert texts == ["starts the lag", "missed"]


async def test_lagging_member_that_does_not_read_is_closed_after_the_lag_timeout() -> None:
    env = await make_env(send_buffer_bytes=4096, lag_timeout=0.05)
    alice = await env.joined("alice", "general")
    bob = await env.joined("bob", "general")
    drain(alice, bob)
    bob.transport.write_buffer_size = 4096
    alice.send_json({"type": "message", "text": "hello"})
    await settle()
    assert bob.conn.lagging
    closed = asyncio.Event()
    on_close = env.node.on_close

    def closing(conn: Member) -> None:
        on_close(conn)
        closed.set()

    env.node.on_close = closing  # type: ignore[method-assign]
    await asyncio.wait_for(closed.wait(), 5)
    assert bob.close_code == 1013
    assert env.rejected("slow_consumer") == 1.0
    assert env.metric("roomcast_slow_consumer_drops_total") == 1.0
    assert env.metric("roomcast_lags_total", outcome="timeout") == 1.0
    assert alice.events() == [
        message_event("general", "alice", "hello", 1),
        {"type": "user_left", "room": "general", "username": "bob"},
    ]


async def test_lagging_member_whose_gap_left_history_is_closed() -> None:
    env = await make_env(history_size=2, send_buffer_bytes=4096)
    alice = await env.joined("alice", "general")
    bob = await env.joined("bob", "general")
    drain(alice, bob)
    bob.transport.write_buffer_size = 4096
    for n in range(5):  # the first starts the lag, 4 are missed; history keeps 2
        alice.send_json({"type": "message", "text": f"m{n}"})
        await settle()
    assert bob.conn.lagging
    bob.transport.write_buffer_size = 0
    bob.conn.resume_writing()
    await settle()
    assert bob.close_code == 1013
    assert env.metric("roomcast_lags_total", outcome="gap") == 1.0


async def test_lagging_member_is_closed_when_its_room_announces_a_loss() -> None:
    # It gets no room traffic, the loss notice included: reading history on from its offset
    # afterwards would pass over the loss (a new epoch's messages as if they followed).
    env = await make_env(send_buffer_bytes=4096)
    alice = await env.joined("alice", "general")
    bob = await env.joined("bob", "general")
    drain(alice, bob)
    bob.transport.write_buffer_size = 4096
    alice.send_json({"type": "message", "text": "starts the lag"})
    await settle()
    assert bob.conn.lagging
    notice = protocol.loss("general", protocol.LOSS_EPOCH_CHANGED, "e1", 2, None, "e2")
    env.node.on_broker_message("general", pack(0.0, notice))
    await settle()
    assert bob.close_code == 1013
    assert env.metric("roomcast_lags_total", outcome="gap") == 1.0
    assert "loss" in [e["type"] for e in alice.events()]  # the reader is told as ever


# Broker interplay


async def test_bad_broker_payload_is_counted_and_dropped(env: Env) -> None:
    alice = await env.joined("alice", "general")
    drain(alice)
    env.node.on_broker_message("general", b"not an envelope")
    bad_exclude = b"\x02" + b"\x00" * 8 + b"\x00\x02\xff\xfe" + b"0\n{}"
    env.node.on_broker_message("general", bad_exclude)
    await settle()
    assert env.metric("roomcast_broker_bad_payloads_total") == 2.0
    assert alice.events() == []


async def test_broker_message_for_room_without_members_is_ignored(env: Env) -> None:
    env.node.on_broker_message("nobody-here", b"garbage")
    assert env.metric("roomcast_broker_bad_payloads_total") == 0.0


async def test_broker_message_fans_out_with_exclude(env: Env) -> None:
    alice = await env.joined("alice", "general")
    bob = await env.joined("bob", "general")
    drain(alice, bob)
    count = env.metric("roomcast_fanout_latency_seconds_count")
    fast = env.metric("roomcast_fanout_latency_seconds_bucket", le="0.01")
    slow = env.metric("roomcast_fanout_latency_seconds_bucket", le="0.025")
    assert count is not None
    assert fast is not None
    assert slow is not None
    event = b'{"type":"typing","room":"general","username":"remote"}'
    env.node.on_broker_message("general", pack(NOW - 0.015, event, exclude=bob.conn.id))
    await settle()
    assert alice.events() == [{"type": "typing", "room": "general", "username": "remote"}]
    assert bob.events() == []
    assert env.metric("roomcast_fanout_latency_seconds_count") == count + 1
    assert env.metric("roomcast_fanout_latency_seconds_bucket", le="0.01") == fast
    assert env.metric("roomcast_fanout_latency_seconds_bucket", le="0.025") == slow + 1


class UnavailableBroker(MemoryBroker):
    async def subscribe(self, room: str) -> None:
        raise BrokerUnavailable("redis is down")


async def test_join_when_broker_unavailable() -> None:
    env = await make_env(UnavailableBroker)
    alice = await env.connect()
    alice.send_json({"type": "join", "room": "general", "username": "alice"})
    await settle()
    assert alice.events() == [
        {
            "type": "error",
            "code": "unavailable",
            "reason": "cannot join now: redis is down",
            "room": "general",
        }
    ]
    assert env.node.rooms.rooms_of(alice.conn) == []
    assert env.node.rooms.room_count == 0
    assert env.rejected("unavailable") == 1.0
    assert env.metric("roomcast_rooms_local") == 0.0


class RefusedJoinBroker(MemoryBroker):
    """Redis answers the join script with an error: ``OOM`` (refused at its first write, so it
    did nothing) or an unknown one (it may have announced the join)."""

    async def join(
        self,
        room: str,
        member: str,
        username: str,
        since: Since | None,
        announce: bytes,
        user: str | None = None,
        user_id: str | None = None,
    ) -> JoinReply:
        if username == "refused":
            raise NotRun("redis refused: OOM")
        if username == "unsure":
            raise BrokerUnavailable("redis refused: something else")
        return await super().join(room, member, username, since, announce, user, user_id)


async def test_a_join_redis_refused_at_once_is_not_retracted_with_user_left() -> None:
    env = await make_env(RefusedJoinBroker)
    alice = await env.joined("alice", "general")
    drain(alice)
    for name in ("refused", "unsure"):
        bob = await env.connect()
        bob.send_json({"type": "join", "room": "general", "username": name})
        await settle()
        assert [e["code"] for e in bob.events()] == ["unavailable"]
    await settle()
    # Only the join whose fate Redis did not tell is retracted.
    assert [(e["type"], e["username"]) for e in alice.events()] == [("user_left", "unsure")]


class FailingPublishBroker(MemoryBroker):
    def publish_message(
        self,
        room: str,
        head: bytes,
        prefix: bytes,
        on_failure: FailureHandler | None = None,
        on_published: object = None,
        reserve: int = 0,
        on_refused: object = None,
    ) -> None:
        assert on_failure is not None
        failure = Unconfirmed("lost reply") if b'"text":"unsure"' in prefix else BrokerUnavailable()
        asyncio.get_running_loop().call_soon(on_failure, failure)


async def test_an_unconfirmed_message_is_told_apart_from_a_refused_one() -> None:
    env = await make_env(FailingPublishBroker)
    alice = await env.joined("alice", "general")
    drain(alice)
    alice.send_json({"type": "message", "text": "unsure", "id": 7})
    await settle()
    assert alice.events() == [
        {
            "type": "error",
            "code": "unconfirmed",
            "reason": "message may or may not have been sent",
            "room": "general",
            "id": 7,
        }
    ]
    assert env.rejected("unconfirmed") == 1.0


async def test_publish_failure_tells_sender() -> None:
    env = await make_env(FailingPublishBroker)
    alice = await env.joined("alice", "general")
    bob = await env.joined("bob", "general")
    drain(alice, bob)
    alice.send_json({"type": "message", "text": "lost"})
    await settle()
    assert alice.events() == [
        {
            "type": "error",
            "code": "unavailable",
            "reason": "message not delivered: broker unavailable",
            "room": "general",
        }
    ]
    assert bob.events() == []
    assert env.metric("roomcast_publish_failures_total") == 1.0
    assert env.rejected("unavailable") == 1.0


async def test_frames_with_an_id_get_it_back_in_their_reply_ack_or_error(env: Env) -> None:
    alice = await env.connect()
    alice.send_json({"type": "join", "room": "general", "username": "alice", "id": "j1"})
    await settle()
    joined = alice.events()
    assert joined[0]["type"] == "joined" and joined[0]["id"] == "j1"
    alice.send_json({"type": "message", "text": "hi", "id": 41})
    await settle()
    events = alice.events()
    ack = next(e for e in events if e["type"] == "ack")
    message = next(e for e in events if e["type"] == "message")
    assert ack == {"type": "ack", "id": 41, "room": "general", "epoch": message["epoch"],
                   "offset": message["offset"]}  # fmt: skip
    assert "id" not in message  # the room's event is the same bytes for every member
    alice.send_json({"type": "message", "text": "no id, no ack"})
    await settle()
    assert [e["type"] for e in alice.events()] == ["message"]
    for frame, kind in (
        ({"type": "history", "limit": 1, "id": "h"}, "history"),
        ({"type": "presence", "id": "p"}, "presence"),
        ({"type": "leave", "id": "l"}, "left"),
    ):
        alice.send_json(frame)
        await settle()
        (reply,) = alice.events()
        assert (reply["type"], reply["id"]) == (kind, frame["id"])
    alice.send_json({"type": "message", "text": "after leaving", "id": "m2"})
    await settle()
    (refused,) = alice.events()
    assert (refused["type"], refused["code"], refused["id"]) == ("error", "not_joined", "m2")


async def test_a_failed_publication_names_the_frame_by_its_id() -> None:
    env = await make_env(FailingPublishBroker)
    alice = await env.joined("alice", "general")
    drain(alice)
    alice.send_json({"type": "message", "text": "lost", "id": "m1"})
    await settle()
    (refused,) = alice.events()
    assert (refused["code"], refused["id"]) == ("unavailable", "m1")


# Limits beside the per-connection ones: joins per connection, one client's connections
# together, one room's senders together (issue 15: 256 connections of one address put 5,120
# messages into a room in 2.6 s; join/leave churn flooded members). Time is frozen: no refill.


def codes(events: list[dict[str, Any]]) -> list[str]:
    return [e.get("code", e["type"]) for e in events]


async def test_join_churn_of_one_connection_is_limited() -> None:
    env = await make_env(node_limits={"join_rate": (1.0, 3)})
    client = await env.connect()
    for index in range(5):
        client.send_json({"type": "join", "room": f"r{index}", "username": "ann"})
        await settle()
    assert codes(client.events()) == ["joined"] * 3 + ["rate_limited"] * 2
    # Leaving is never refused, and joining a room one is in costs nothing.
    client.send_json({"type": "join", "room": "r0", "username": "ann"})
    client.send_json({"type": "leave", "room": "r1"})
    await settle()
    assert codes(client.events()) == ["joined", "left"]
    assert env.rejected("rate_limited") == 2


async def test_a_refused_join_says_when_it_would_pass() -> None:
    # The clients retry a refused rejoin after `retry_after` (docs/protocol.md): it is the time
    # until the later of the connection's and the client's join buckets has a token again.
    env = await make_env(node_limits={"join_rate": (2.0, 1), "client_join_rate": (0.5, 2)})
    client = await env.connect()
    client.send_json({"type": "join", "room": "a", "username": "ann"})
    client.send_json({"type": "join", "room": "b", "username": "ann", "id": "j2"})
    await settle()
    refused = [e for e in client.events() if e["type"] == "error"]
    assert refused == [
        {
            "type": "error",
            "code": "rate_limited",
            "reason": "too many joins; slow down",
            "room": "b",
            "id": "j2",
            "retry_after": 0.5,  # one token of the connection's 2/s
        }
    ]
    # Two leaves spend the client's bucket (burst 2, 0.5/s): a token is back in 2 s.
    for room in ("a", "c"):
        other = await env.connect()
        other.send_json({"type": "join", "room": room, "username": "bob"})
        await settle()
        other.send_json({"type": "leave", "room": room})
        await settle()
    late = await env.connect()
    late.send_json({"type": "join", "room": "d", "username": "cy"})
    await settle()
    [error] = [e for e in late.events() if e["type"] == "error"]
    assert (error["code"], error["retry_after"]) == ("rate_limited", 2.0)


async def test_one_clients_connections_share_a_join_and_a_message_budget() -> None:
    env = await make_env(
        node_limits={"client_join_rate": (1.0, 4), "client_message_rate": (1.0, 6)}
    )
    # Every harness connection comes from 127.0.0.1: one client in open mode.
    clients = [await env.connect() for _ in range(3)]
    for index, client in enumerate(clients):
        for room in ("a", "b"):
            client.send_json({"type": "join", "room": room, "username": f"u{index}"})
            await settle()

    # Joining spends nothing of the client's shared join bucket: users behind one address
    # all get in. Leaving spends it (each leave is a notice to the room), and once leaves used
    # it up, the client's next join anywhere waits for it to refill.
    def replies(client: Any) -> list[str]:
        return [c for c in codes(client.events()) if c in ("joined", "left", "rate_limited")]

    assert [replies(c) for c in clients] == [["joined", "joined"]] * 3
    for client in clients:
        client.send_json({"type": "leave", "room": "b"})
        await settle()
    clients[0].send_json({"type": "join", "room": "b", "username": "u0"})
    await settle()
    clients[0].send_json({"type": "leave", "room": "b"})
    await settle()
    clients[1].send_json({"type": "join", "room": "b", "username": "u1"})
    await settle()
    assert replies(clients[0]) == ["left", "joined", "left"]
    assert replies(clients[1]) == ["left", "rate_limited"]
    for _ in range(4):
        for client in clients[:2]:
            client.send_json({"type": "message", "room": "a", "text": "x"})
    await settle()
    events = [e for c in clients[:2] for e in c.events() if e["type"] in ("message", "error")]
    refused = [e for e in events if e["type"] == "error"]
    assert len(refused) == 2
    assert all(e["code"] == "rate_limited" and "together" in e["reason"] for e in refused)
    # Each connection kept its own frame budget: nobody was closed for the shared refusals.
    assert all(c.close_code is None for c in clients)


async def test_a_room_has_a_message_budget_whoever_sends() -> None:
    env: Env = await make_env(node_limits={"room_message_rate": (1.0, 5)})
    ann, bob = await env.joined("ann", "busy"), await env.joined("bob", "busy")
    ann.events()
    bob.events()
    for _ in range(4):
        ann.send_json({"type": "message", "text": "a"})
        bob.send_json({"type": "message", "text": "b"})
    await settle()
    received = [e for e in ann.events() if e["type"] == "message"]
    assert len(received) == 5
    assert env.rejected("rate_limited") == 3
    # Another room is not affected.
    quiet = await env.joined("cy", "quiet")
    quiet.send_json({"type": "message", "text": "hi"})
    await settle()
    assert "message" in codes(quiet.events())


class _PoolClock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


def test_a_released_bucket_outlives_its_connections_until_it_would_have_refilled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = _PoolClock()
    monkeypatch.setattr(ratelimit_module, "time", clock)
    pool = BucketPool(rate=1.0, burst=2)
    bucket = pool.acquire("ip:1.2.3.4")
    assert bucket.allow() and bucket.allow() and not bucket.allow()
    pool.release("ip:1.2.3.4")
    # Reconnecting at once gets the same, empty bucket: no fresh burst.
    assert not pool.acquire("ip:1.2.3.4").allow()
    pool.release("ip:1.2.3.4")
    clock.now += 2.5
    pool.acquire("other")  # prunes what has refilled anyway
    assert len(pool) == 1


async def test_event_streams_spend_the_clients_join_budget_with_its_joins() -> None:
    # A stream subscribes the node to its room as a join does (red team 15): opening one needs
    # a token of the client's join bucket, and one its client closes spends one as a leave does,
    # in the same bucket as the client's WebSocket joins and leaves.
    env = await make_env(node_limits={"client_join_rate": (1.0, 2)})
    client = "ip:127.0.0.1"  # every harness connection's client, in open mode
    assert env.node.admit_stream(client) is None
    env.node.stream_left(client)
    env.node.stream_left(client)
    assert env.node.admit_stream(client) == 1.0  # a token short, refilling at 1/s
    ws = await env.connect()
    ws.send_json({"type": "join", "room": "a", "username": "ann", "id": "j"})
    await settle()
    assert [e["code"] for e in ws.events() if e["type"] == "error"] == ["rate_limited"]
    # Another client's budget is its own.
    assert env.node.admit_stream("ip:127.0.0.2") is None
