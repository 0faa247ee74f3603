"""roomcast.client against REAL redis-server, nginx and node processes: chat across nodes,
resume after a node is SIGKILLed mid-stream, offline sends, and the closes it must not retry."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from roomcast_dev.devcluster import LocalCluster, free_port

from roomcast.client import (
    Backoff,
    ChatMessage,
    ClientClosedError,
    Closed,
    Connected,
    Disconnected,
    Error,
    Event,
    Gap,
    Joined,
    Loss,
    Outgoing,
    Reconnecting,
    Resumed,
    RoomcastClient,
    SendError,
    SendFailed,
    UserJoined,
)
from roomcast.core.auth import issue_token
from tests.support.cluster import FAST_ENV, SHARED_LIMITS_OFF, http_get, metric_value
from tests.support.wsclient import scaled

pytestmark = pytest.mark.integration
E = TypeVar("E")

# History long enough to replay the whole outage of the kill scenario (docs/guarantees.md, N).
RECOVERY_ENV = dict(FAST_ENV, ROOMCAST_HISTORY_SIZE="1000")
QUICK_RETRY = Backoff(base=0.1, cap=1.0)
SECRET = "client-test-secret-" + "x" * 32


def new_room() -> str:
    return "cli-" + uuid.uuid4().hex[:10]


class Collector:
    """Reads every event of a client in the background, so tests await conditions on them."""

    def __init__(self, client: RoomcastClient, on_event: Callable[[Event], None] | None = None):
        self.client = client
        self.events: list[Event] = []
        self._on_event = on_event
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for event in self.client:
            self.events.append(event)
            if self._on_event is not None:
                self._on_event(event)
            self._changed.set()
        self._changed.set()

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    def messages(self) -> list[ChatMessage]:
        return [e for e in self.events if isinstance(e, ChatMessage)]

    async def until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        async with asyncio.timeout(scaled(timeout)):
            while not condition():
                if self._task.done():
                    raise AssertionError(f"events ended before {what}: {self.events[-5:]}")
                self._changed.clear()
                await self._changed.wait()

    def finished(self) -> bool:
        return self._task.done()

    async def stop(self) -> None:
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task


def assert_contiguous(messages: list[ChatMessage], after: int) -> None:
    """Offsets after ``after``, each one more than the previous: no gap, no duplicate."""
    offsets = [m.offset for m in messages]
    assert offsets == list(range(after + 1, after + 1 + len(offsets))), offsets
    assert len({m.epoch for m in messages}) <= 1


async def test_two_clients_on_different_nodes_chat(cluster: LocalCluster) -> None:
    room = new_room()
    ann = RoomcastClient(cluster.nodes[0].url, "ann", rooms=[room])
    bob = RoomcastClient(cluster.nodes[1].url, "bob")
    async with ann, bob:
        joined_ann = await ann.join(room, timeout=scaled(10))
        joined_bob = await bob.join(room, timeout=scaled(10))
        assert ann.node != bob.node
        assert joined_ann.epoch == joined_bob.epoch
        ann_events, bob_events = Collector(ann), Collector(bob)
        await ann_events.until(lambda: bool(ann_events.of(UserJoined)), 10, "bob's user_joined")
        sent = [await ann.send(room, "hi bob"), await bob.send(room, "hi ann")]
        sent += [await ann.send(room, f"ann {i}") for i in range(5)]
        delivered = [await asyncio.wait_for(o.wait(), scaled(10)) for o in sent]
        assert all(m.epoch == joined_ann.epoch for m in delivered)
        await ann_events.until(lambda: len(ann_events.messages()) == 7, 10, "ann: 7 messages")
        await bob_events.until(lambda: len(bob_events.messages()) == 7, 10, "bob: 7 messages")
        # Both members see one stream, in one order, offsets contiguous from the later join.
        assert [m.offset for m in ann_events.messages()] == [
            m.offset for m in bob_events.messages()
        ]
        assert_contiguous(ann_events.messages(), joined_bob.offset)
        assert [m.text for m in bob_events.messages() if m.username == "ann"] == [
            "hi bob", *[f"ann {i}" for i in range(5)],
        ]  # fmt: skip
        presence = await bob.presence(room, timeout=scaled(10))
        assert {(m.username, m.connections) for m in presence.members} == {("ann", 1), ("bob", 1)}
        history = await bob.history(room, 3, timeout=scaled(10))
        assert list(history.messages) == ann_events.messages()[-3:]
        await ann_events.stop()
        await bob_events.stop()


async def test_node_sigkilled_mid_stream_client_resumes_every_message_exactly_once() -> None:
    total = 300
    with LocalCluster(3, node_env=RECOVERY_ENV) as cluster:
        room = new_room()
        # Through nginx: after the kill, nginx must send the client to a surviving node.
        watcher = RoomcastClient(cluster.url, "watcher", rooms=[room], backoff=QUICK_RETRY)
        async with watcher:
            start = await watcher.join(room, timeout=scaled(10))
            victim_id = watcher.node
            victim = next(n for n in cluster.nodes if n.node_id == victim_id)
            survivor = next(n for n in cluster.nodes if n is not victim)
            sender = RoomcastClient(survivor.url, "sender", rooms=[room])
            async with sender:
                await sender.join(room, timeout=scaled(10))
                offline: list[tuple[Outgoing, bool, int]] = []

                def send_while_offline(event: Event) -> None:
                    if isinstance(event, Disconnected) and not offline:
                        # Runs before the client can reconnect: the message must be queued.
                        task = asyncio.ensure_future(watcher.send(room, "sent while offline"))
                        task.add_done_callback(
                            lambda t: offline.append(
                                (t.result(), watcher.connected, watcher.unsent_count)
                            )
                        )

                seen = Collector(watcher, send_while_offline)
                other = Collector(sender)
                mine: list[Outgoing] = []

                async def stream() -> None:
                    for seq in range(total):
                        await sender.send(room, f"s:{seq}")
                        if seq % 10 == 0:  # the watcher talks too, so some of it is in flight
                            mine.append(await watcher.send(room, f"w:{seq}"))
                        await asyncio.sleep(0.005)  # a stream over time: the kill lands mid-way

                streaming = asyncio.create_task(stream())
                await seen.until(lambda: len(seen.messages()) >= 60, 20, "60 messages")
                victim.process.signal(signal.SIGKILL)
                await asyncio.wait_for(streaming, scaled(60))

                def all_from_sender() -> bool:
                    return sum(m.username == "sender" for m in seen.messages()) == total

                await seen.until(all_from_sender, 60, "every message of the stream")
                # The offline send: queued while disconnected, delivered after the resume.
                assert offline, "the client never reported its disconnection"
                queued, was_connected, unsent = offline[0]
                assert not was_connected and unsent >= 1
                echo = await asyncio.wait_for(queued.wait(), scaled(20))
                assert echo.text == "sent while offline" and echo.username == "watcher"
                outcomes = [await asyncio.wait_for(o.outcome, scaled(40)) for o in mine]
                # Everything the watcher's messages reached, the sender's stream shows too.
                last = max(m.offset for m in seen.messages())
                await other.until(
                    lambda: bool(other.messages()) and other.messages()[-1].offset >= last,
                    20, "the sender's stream to catch up",
                )  # fmt: skip

        stream_texts = [m.text for m in seen.messages() if m.username == "sender"]
        assert stream_texts == [f"s:{seq}" for seq in range(total)]  # all, once, in order
        assert_contiguous(seen.messages(), start.offset)
        # The sender joined right after the watcher: both saw the same stream.
        assert [m.offset for m in other.messages()] == [m.offset for m in seen.messages()]
        # The resume: reported, across a reconnect to a surviving node, with no gap.
        connected = seen.of(Connected)
        assert len(connected) >= 2 and connected[-1].node != victim_id
        assert seen.of(Disconnected)[0].code == 1006
        assert seen.of(Reconnecting) and not seen.of(Gap)
        assert seen.of(Resumed)
        rejoin = [j for j in seen.of(Joined) if j.recovered is not None]
        assert rejoin and rejoin[-1].recovered is True
        # The watcher's own messages: none twice; each either delivered or reported unconfirmed
        # (written just before the kill: its fate is unknown, and it is never resent).
        own = [m.text for m in other.messages() if m.username == "watcher"]
        assert len(own) == len(set(own))
        for outgoing, outcome in zip(mine, outcomes, strict=True):
            if isinstance(outcome, ChatMessage):
                assert own.count(outgoing.text) == 1
            else:
                assert isinstance(outcome, SendFailed) and outcome.reason == "unconfirmed"
        assert own.count("sent while offline") == 1
        talk = [t for t in own if t.startswith("w:")]
        assert talk == sorted(talk, key=lambda t: int(t[2:]))  # in the order it was sent
        assert sum(isinstance(o, ChatMessage) for o in outcomes) >= len(mine) - 2


@pytest.fixture(scope="module")
def strict_node() -> Iterator[LocalCluster]:
    """One node, tokens required, and a low message rate that a flood trips into 1008."""
    env = {
        "ROOMCAST_AUTH_SECRET": SECRET,
        "ROOMCAST_MESSAGE_RATE_PER_SECOND": "1",
        "ROOMCAST_MESSAGE_RATE_BURST": "3",
        **SHARED_LIMITS_OFF,
    }
    with LocalCluster(1, redis=False, nginx=False, node_env=env) as running:
        yield running


def accepted_connections(node_cluster: LocalCluster) -> float:
    _, text = http_get(f"{node_cluster.nodes[0].metrics_url}/metrics")
    return metric_value(text, "roomcast_connections_accepted_total")


async def test_flood_close_1008_stops_the_client_instead_of_looping(
    strict_node: LocalCluster,
) -> None:
    before = accepted_connections(strict_node)
    token = issue_token(SECRET, "flooder")
    room = new_room()
    client = RoomcastClient(strict_node.url, "flooder", token=token, backoff=QUICK_RETRY)
    async with client:
        joined = await client.join(room, timeout=scaled(10))
        assert joined.username == "flooder"
        events = Collector(client)
        sent = [await client.send(room, f"flood {i}") for i in range(40)]
        await events.until(lambda: bool(events.of(Closed)), 20, "the client to stop")
        closed = events.of(Closed)[-1]
        assert closed.code == 1008
        assert client.closed == closed
        disconnected = events.of(Disconnected)
        assert [(d.code, d.will_reconnect) for d in disconnected] == [(1008, False)]
        assert any(e.code == "rate_limited" for e in events.of(Error))
        assert events.events[-1] is closed and not events.of(Reconnecting)
        await events.until(events.finished, 5, "the event stream to end")
        # Every message has an outcome: delivered, or given up (never left hanging). Those the
        # server refused say so exactly (their error carried their id); the burst's echoes may
        # be cut off by the close: then they are unconfirmed.
        assert all(o.done for o in sent)
        outcomes = [o.outcome.result() for o in sent]
        reasons = {o.reason for o in outcomes if isinstance(o, SendFailed)}
        assert "rate_limited" in reasons
        assert reasons <= {"rate_limited", "unconfirmed", "stopped"}
        with pytest.raises(ClientClosedError):
            await client.send(room, "after the close")
    assert accepted_connections(strict_node) - before == 1  # one connection, no retry loop


async def test_handshake_401_stops_the_client(strict_node: LocalCluster) -> None:
    before = accepted_connections(strict_node)
    client = RoomcastClient(strict_node.url, "nobody", backoff=QUICK_RETRY)
    async with client:
        closed = await asyncio.wait_for(client.wait_closed(), scaled(10))
        assert closed.status == 401
        with pytest.raises(ClientClosedError):
            await client.wait_connected(scaled(1))
        with pytest.raises(ClientClosedError):
            await client.join(new_room())
    assert accepted_connections(strict_node) == before


async def test_offline_sends_expire_or_overflow_with_send_failed() -> None:
    # Nothing listens there: the client keeps retrying, and its queue gives up by the rules.
    url = f"ws://127.0.0.1:{free_port()}/chat"
    client = RoomcastClient(
        url, "ann", rooms=["r"], backoff=QUICK_RETRY, max_unsent=2, queue_timeout=0.5
    )
    async with client:
        events = Collector(client)
        kept = [await client.send("r", "one"), await client.send("r", "two")]
        overflow = await client.send("r", "three")
        failure = await asyncio.wait_for(overflow.outcome, scaled(1))
        assert isinstance(failure, SendFailed) and failure.reason == "queue_full"
        expired = [await asyncio.wait_for(o.outcome, scaled(5)) for o in kept]
        assert [(f.text, f.reason) for f in expired if isinstance(f, SendFailed)] == [
            ("one", "expired"), ("two", "expired"),
        ]  # fmt: skip
        await events.until(lambda: len(events.of(SendFailed)) == 3, 5, "three SendFailed")
        await events.until(lambda: len(events.of(Reconnecting)) >= 2, 10, "two retries")
        assert not client.connected and not events.of(Connected)
        await events.stop()


async def test_gives_up_after_max_attempts_when_nothing_listens() -> None:
    url = f"ws://127.0.0.1:{free_port()}/chat"
    async with RoomcastClient(url, "ann", backoff=QUICK_RETRY, max_attempts=2) as client:
        closed = await asyncio.wait_for(client.wait_closed(), scaled(10))
        assert closed.reason.startswith("gave up after 2 attempts")
        assert "ConnectionRefused" in closed.reason or "Connect call failed" in closed.reason


async def test_node_drained_with_1001_client_moves_to_another_node_and_resumes() -> None:
    with LocalCluster(2, node_env=dict(RECOVERY_ENV, ROOMCAST_DRAIN_TIMEOUT="5")) as cluster:
        room = new_room()
        async with (
            RoomcastClient(cluster.url, "mover", rooms=[room], backoff=QUICK_RETRY) as mover,
            RoomcastClient(cluster.url, "stayer", rooms=[room]) as stayer,
        ):
            await mover.join(room, timeout=scaled(10))
            await stayer.join(room, timeout=scaled(10))
            drained = next(n for n in cluster.nodes if n.node_id == mover.node)
            events = Collector(mover)
            before = await (await stayer.send(room, "before the drain")).wait()
            drained.process.signal(signal.SIGTERM)
            await events.until(lambda: bool(events.of(Resumed)), 20, "the resume")
            after = await asyncio.wait_for((await mover.send(room, "after")).wait(), scaled(10))
            assert [(d.code, d.will_reconnect) for d in events.of(Disconnected)] == [(1001, True)]
            assert events.of(Connected)[-1].node != drained.node_id
            assert [m.offset for m in events.messages()] == [before.offset, after.offset]
            assert after.offset == before.offset + 1 and not events.of(Gap)
            await events.stop()


async def test_redis_restarted_empty_client_gets_a_loss_notice_and_resyncs() -> None:
    """A connected client whose room lost its history is told at once (a typed Loss and a Gap),
    continues in the new epoch from its offset 1 and can reload the room's history."""
    env = dict(FAST_ENV, ROOMCAST_REDIS_TIMEOUT="1")
    with LocalCluster(2, nginx=False, node_env=env) as cluster:
        room = new_room()
        reader = RoomcastClient(cluster.nodes[0].url, "reader", rooms=[room])
        writer = RoomcastClient(cluster.nodes[1].url, "writer", rooms=[room])
        async with reader, writer:
            joined = await reader.join(room, timeout=scaled(10))
            await writer.join(room, timeout=scaled(10))
            seen = Collector(reader)
            await (await writer.send(room, "old epoch")).wait()
            await seen.until(lambda: len(seen.messages()) == 1, 10, "the first message")

            await asyncio.to_thread(cluster.kill_redis)
            await asyncio.to_thread(cluster.start_redis)
            # Nothing is sent: the notice must come from the resubscription itself.
            await seen.until(lambda: bool(seen.of(Loss)), 20, "the loss notice")
            loss = seen.of(Loss)[0]
            assert (loss.room, loss.reason, loss.epoch) == (room, "epoch_changed", joined.epoch)
            assert loss.from_offset == 2 and loss.to_offset is None
            gap = next(g for g in seen.of(Gap) if g.reason == "epoch_changed")
            assert gap.room == room

            async with asyncio.timeout(scaled(20)):
                for index in range(3):  # refused while the writer's node resubscribes: again
                    while True:
                        try:
                            await (await writer.send(room, f"new epoch {index}")).wait()
                            break
                        except SendError as exc:
                            assert exc.failure.reason == "unavailable", exc.failure
            await seen.until(lambda: len(seen.messages()) == 4, 20, "the new epoch's messages")
            fresh = seen.messages()[1:]
            assert [m.text for m in fresh] == [f"new epoch {i}" for i in range(3)]
            assert [m.offset for m in fresh] == [1, 2, 3]
            assert fresh[0].epoch != joined.epoch
            assert [g.reason for g in seen.of(Gap)] == ["epoch_changed"]  # no offsets_skipped
            history = await reader.history(room, 10)
            assert [m.text for m in history.messages] == [m.text for m in fresh]
            await seen.stop()
