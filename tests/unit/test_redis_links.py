"""The Redis layer's seams without a server: RESP bytes, what a command says about itself, how
links refuse work while disconnected, and what the broker's semantics tell its topology."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from typing import Any

import pytest
from redis.asyncio.connection import Connection, ConnectionPool

from roomcast.broker import BrokerUnavailable, resp, scripts
from roomcast.broker.deadline import RedisClock
from roomcast.broker.links import (
    Command,
    CommandLink,
    Endpoint,
    ReconnectDelay,
    SubscriberLink,
    resolving,
)
from roomcast.broker.redis import CLASSIC_PUBSUB, Answer, RedisBroker, channel_for
from roomcast.broker.shard import RedisShard, ShardEvents
from roomcast.wire import envelope
from roomcast.wire.recovery import Since

# Never connected to: no link here is started.
NOWHERE = Endpoint(ConnectionPool.from_url("redis://127.0.0.1:1/0"), timeout=1.0)


@pytest.mark.parametrize(
    "parts",
    [
        (b"PING",),
        (b"SET", b"k", b""),
        (b"PUBLISH", b"roomcast:room:r", b"\x00\r\n\xff binary"),
        (b"EVALSHA", b"0" * 40, b"2", b"a", b"b", "é".encode()),
    ],
)
def test_resp_commands_are_what_redis_py_would_send(parts: tuple[bytes, ...]) -> None:
    assert resp.command(*parts) == b"".join(Connection().pack_command(*parts))


def test_a_command_head_completed_by_its_arguments_is_the_whole_command() -> None:
    # The publish path builds the head once and appends the channel and payload per message.
    whole = resp.head(b"SPUBLISH", 2) + resp.bulk(b"rc:{r}") + resp.bulk(b"payload")
    assert whole == resp.command(b"SPUBLISH", b"rc:{r}", b"payload")


def test_evalsha_counts_its_keys_before_its_arguments() -> None:
    sha = scripts.JOIN.sha
    assert resp.evalsha(sha, (b"k1", b"k2"), (b"a",)) == resp.command(
        b"EVALSHA", sha, b"2", b"k1", b"k2", b"a"
    )


def test_a_command_runs_then_before_its_reply_and_only_on_success() -> None:
    seen: list[str] = []
    command = Command(b"", lambda reply, error: seen.append(f"reply {reply} {error}"))
    command.then = lambda: seen.append("then")
    command.settle(7, None)
    command.settle(None, BrokerUnavailable("x"))
    assert seen == ["then", "reply 7 None", "reply None x"]


async def test_a_command_refused_before_sending_is_told_on_the_next_loop_turn() -> None:
    seen: list[Exception | None] = []
    command = Command(b"", lambda reply, error: seen.append(error))
    command.fail_soon(asyncio.get_running_loop(), BrokerUnavailable("down"))
    assert seen == []  # never inline: the caller may still be setting up
    await asyncio.sleep(0)
    assert [str(e) for e in seen] == ["down"]


async def test_resolving_keeps_the_first_outcome() -> None:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    settle = resolving(future)
    settle(None, BrokerUnavailable("lost"))
    settle("late", None)
    with pytest.raises(BrokerUnavailable, match="lost"):
        await future


def test_reconnect_delays_grow_with_full_jitter_up_to_the_maximum() -> None:
    delays = ReconnectDelay(initial=0.1, maximum=1.0)
    random.seed(5)
    for attempt, bound in ((0, 0.1), (2, 0.4), (10, 1.0)):
        assert all(0.1 <= delays.delay(attempt) <= bound for _ in range(200))


def _events(log: list[str]) -> ShardEvents:
    return ShardEvents(
        message=lambda room, payload: log.append(f"message {room}"),
        recheck=lambda room: log.append(f"recheck {room}"),
        changed=lambda: log.append("changed"),
        commands_up=lambda: log.append("commands up"),
        lost=lambda: log.append("lost"),
    )


def test_a_shard_names_its_links_and_tells_the_state_change_last() -> None:
    log: list[str] = []
    shard = RedisShard.open("h:7000", NOWHERE, (), CLASSIC_PUBSUB, _events(log))
    assert (shard.commands.name, shard.subscriber.name) == ("publisher h:7000", "subscriber h:7000")
    shard.commands.on_up()
    shard.subscriber.on_up()
    shard.subscriber.on_down()
    assert log == ["commands up", "changed", "changed", "lost", "changed"]
    assert not shard.connected


async def test_links_refuse_work_while_disconnected() -> None:
    commands = CommandLink("publisher", NOWHERE, ())
    with pytest.raises(BrokerUnavailable, match="not connected"):
        await commands.request(resp.PING)
    assert commands.oldest_age(asyncio.get_running_loop().time()) == 0.0  # nothing in flight
    subscriber = SubscriberLink(
        "subscriber", NOWHERE, CLASSIC_PUBSUB, lambda r, p: None, lambda room: None
    )
    with pytest.raises(BrokerUnavailable, match="not connected"):
        await subscriber.subscribe(channel_for("r"))
    subscriber.unsubscribe(channel_for("r"))  # nothing to send: no error either


class Recording:
    """A topology that records what the broker asks of it, answering requests from a script."""

    scripts = scripts.CLASSIC
    publish_command = b"PUBLISH"
    ready = True
    clock = RedisClock()

    def __init__(self, events: ShardEvents, answers: list[Answer]) -> None:
        self.events = events
        self.answers = answers
        self.sent: list[tuple[bytes, bytes, bool]] = []  # (key, command name, publishes)

    def channel(self, room: str) -> bytes:
        return channel_for(room)

    def shards(self) -> Iterable[RedisShard]:
        return ()

    def start(self) -> None: ...

    async def stop(self) -> None: ...

    def command(self, key: bytes, command: Command) -> None:
        self.sent.append((key, _name(command.data), command.publishes))
        if _name(command.data) == b"publish_message":
            # Chat messages are always answered (post_message awaits its publication's fate).
            command.settle(self.answers.pop(0).reply, None)

    async def request(self, key: bytes, data: bytes, *, publishes: bool = False) -> Answer:
        self.sent.append((key, _name(data), publishes))
        return self.answers.pop(0)

    def connected_for(self, key: bytes) -> bool:
        return True

    def listening(self, room: str) -> bool:
        return True

    async def subscribe(self, room: str) -> None: ...

    def unsubscribe(self, room: str) -> None: ...


def _name(data: bytes) -> bytes:
    """The command's name, or the script's for EVALSHA (what a reader of the test wants)."""
    name = data.split(b"\r\n")[2]
    if name != b"EVALSHA":
        return name
    sha = data.split(b"\r\n")[4]
    return next(s.name.encode() for s in scripts.ALL if s.sha == sha)


def _broker(answers: list[Answer], received: list[tuple[str, bytes]]) -> tuple[RedisBroker, Any]:
    made: list[Recording] = []

    def topology(events: ShardEvents) -> Recording:
        made.append(Recording(events, answers))
        return made[0]

    broker = RedisBroker(
        "", lambda room, payload: received.append((room, payload)), topology=topology
    )
    return broker, made[0]


async def test_the_broker_says_which_commands_publish() -> None:
    joined = Answer([b"e1", b"0", b"new", [], 1_700_000_000_000_000])
    published = [Answer([b"1", b"e1"]), Answer([b"2", b"e1"])]
    broker, topology = _broker([*published, joined], [])
    broker.publish("r", b"payload")
    broker.publish_message("r", b"head", b"prefix")
    await broker.post_message("r", b"head", b"prefix")
    await broker.join("r", "m1", "ann", None, b"announce")
    broker.leave("r", "m1", b"announce")
    broker.unsubscribe("r")
    publishing = {name for _, name, publishes in topology.sent if publishes}
    quiet = {name for _, name, publishes in topology.sent if not publishes}
    assert publishing == {b"PUBLISH", b"publish_message", b"join", b"leave"}
    assert quiet == {b"SADD", b"SREM", b"index_room"}


@pytest.mark.parametrize("via_importing", [True, False])
async def test_only_a_join_served_by_an_importing_node_hands_its_announcement_over(
    via_importing: bool,
) -> None:
    received: list[tuple[str, bytes]] = []
    announce = envelope.pack(0.0, b'{"type":"user_joined"}', "", 0)
    answer = Answer([b"e1", b"4", b"recovered", [], 1], via_importing=via_importing)
    broker, _ = _broker([answer], received)
    await broker.subscribe("r")
    await broker.join("r", "m1", "ann", Since(4, "e1"), announce)
    # Published where this node does not listen yet: the node would wait for it in vain.
    assert received == ([("r", announce)] if via_importing else [])
    await broker.gaps.stop()
