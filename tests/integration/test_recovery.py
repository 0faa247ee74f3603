"""No message lost across reconnects and node failures: the fault matrix, with sequence checks,
several concurrent senders, REAL redis-server, nginx and node processes."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
from roomcast_dev.devcluster import LocalCluster, NodeProcess
from websockets.exceptions import ConnectionClosed

from tests.support.cluster import FAST_ENV, http_get, not_ready, ready, until
from tests.support.wsclient import Client, scaled

pytestmark = pytest.mark.integration


# History long enough to cover the whole outage of these scenarios (docs/guarantees.md, N).
RECOVERY_ENV = dict(FAST_ENV, ROOMCAST_HISTORY_SIZE="1000")


def new_room() -> str:
    return "rec-" + uuid.uuid4().hex[:10]


@dataclass
class Receiver:
    """A member that checks every message's offset: contiguous, once, in order."""

    name: str
    room: str
    client: Client
    epoch: str = ""
    last: int = 0
    texts: list[str] = field(default_factory=list)
    reconnects: int = 0
    joined_replies: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    async def join(cls, url: str, room: str, name: str) -> Receiver:
        client = await Client.connect(url)
        joined = await client.join(room, name)
        receiver = cls(name, room, client, joined["epoch"], joined["offset"])
        receiver.joined_replies.append(joined)
        return receiver

    def take(self, event: dict[str, Any]) -> None:
        if event["type"] != "message":
            return
        assert event["epoch"] == self.epoch
        offset = event["offset"]
        assert offset == self.last + 1, f"{self.name}: gap or duplicate: {offset} after {self.last}"
        self.last = event["offset"]
        self.texts.append(event["text"])

    async def rejoin(self, url: str) -> dict[str, Any]:
        """The client of the recovery protocol: reconnect and ask for what it missed."""
        self.client = await Client.connect(url)
        self.reconnects += 1
        await self.client.send(
            type="join",
            room=self.room,
            username=self.name,
            since={"offset": self.last, "epoch": self.epoch},
        )
        joined = await self.client.recv_type("joined", room=self.room)
        self.joined_replies.append(joined)
        return joined

    async def receive(self, count: int, url: str) -> None:
        """Until ``count`` messages were taken, reconnecting with ``since`` whenever cut off."""
        while len(self.texts) < count:
            try:
                event = await self.client.recv(timeout=20)
            except ConnectionClosed:
                joined = await self.rejoin(url)
                assert joined["recovered"] is True, joined
                continue
            self.take(event)


async def send_stream(senders: list[Client], per_sender: int, pace: float = 0.004) -> None:
    async def speak(index: int, sender: Client) -> None:
        for seq in range(per_sender):
            await sender.send(type="message", text=f"s{index}:{seq}")
            await asyncio.sleep(pace)  # a stream over time, so that faults land mid-stream

    await asyncio.gather(*(speak(i, s) for i, s in enumerate(senders)))


def assert_complete(receiver: Receiver, senders: int, per_sender: int) -> None:
    assert len(receiver.texts) == senders * per_sender
    assert len(set(receiver.texts)) == len(receiver.texts)  # exactly once
    for index in range(senders):
        mine = [t for t in receiver.texts if t.startswith(f"s{index}:")]
        assert mine == [f"s{index}:{seq}" for seq in range(per_sender)]  # in order


async def run_fault(
    cluster: LocalCluster,
    receivers: list[Receiver],
    senders: list[Client],
    per_sender: int,
    fault: Callable[[], Awaitable[None]],
    after: int,
) -> None:
    total = per_sender * len(senders)
    stream = asyncio.create_task(send_stream(senders, per_sender))
    watcher = receivers[0]
    # Let the fault strike once the stream is well under way.
    await watcher.receive(after, cluster.url)
    await fault()
    await asyncio.wait_for(
        asyncio.gather(stream, *(r.receive(total, cluster.url) for r in receivers)), scaled(60)
    )


async def test_a_sigkill_a_node_mid_stream_clients_recover_everything() -> None:
    with LocalCluster(3, node_env=RECOVERY_ENV) as cluster:
        room = new_room()
        receivers = [await Receiver.join(cluster.url, room, f"r{i}") for i in range(9)]
        victim_id = receivers[0].client.node
        victim = next(n for n in cluster.nodes if n.node_id == victim_id)
        survivors = [n for n in cluster.nodes if n is not victim]
        senders = [await Client.connect(survivors[i % 2].url) for i in range(3)]
        for index, sender in enumerate(senders):
            await sender.join(room, f"sender{index}")
        on_victim = [r for r in receivers if r.client.node == victim_id]

        async def kill() -> None:
            victim.process.signal(signal.SIGKILL)

        await run_fault(cluster, receivers, senders, 150, kill, after=60)
        for receiver in receivers:
            assert_complete(receiver, 3, 150)
        for receiver in on_victim:
            assert receiver.reconnects >= 1
            assert receiver.client.node != victim_id
            assert receiver.joined_replies[-1]["recovered"] is True


async def test_b_connection_dropped_for_seconds_then_resumed() -> None:
    with LocalCluster(3, node_env=RECOVERY_ENV) as cluster:
        room = new_room()
        receivers = [await Receiver.join(cluster.url, room, f"r{i}") for i in range(4)]
        senders = [await Client.connect(node.url) for node in cluster.nodes]
        for index, sender in enumerate(senders):
            await sender.join(room, f"sender{index}")
        dropped = receivers[0]

        async def drop() -> None:
            # The network goes away under the client: no close handshake at all.
            transport = dropped.client.ws.transport
            transport.abort()
            await asyncio.sleep(2)  # offline for a while: the scenario itself, not a wait
            await dropped.rejoin(cluster.url)

        await run_fault(cluster, receivers, senders, 120, drop, after=30)
        for receiver in receivers:
            assert_complete(receiver, 3, 120)
        assert dropped.reconnects == 1
        replay = dropped.joined_replies[-1]
        assert replay["recovered"] is True and "reason" not in replay


async def test_c_redis_restarted_without_persistence_says_epoch_changed() -> None:
    env = dict(FAST_ENV, ROOMCAST_REDIS_TIMEOUT="1")
    with LocalCluster(2, node_env=env) as cluster:
        room = new_room()
        listener = await Receiver.join(cluster.nodes[0].url, room, "listener")
        sender = await Client.connect(cluster.nodes[1].url)
        await sender.join(room, "sender")
        for index in range(5):
            await sender.send(type="message", text=f"before {index}")
        await listener.receive(5, cluster.url)
        await listener.client.close()
        cluster.kill_redis()
        cluster.start_redis()
        for node in cluster.nodes:
            await until(partial(ready, node), 20, f"{node.node_id} ready")
        joined = await listener.rejoin(cluster.url)
        # Not a silent gap: the client learns its history is gone and must reload.
        assert joined["recovered"] is False
        assert joined["reason"] == "epoch_changed"
        assert joined["epoch"] != listener.epoch
        await sender.send(type="message", text="after restart")
        event = await listener.client.recv_type("message")
        assert event["offset"] == 1 and event["epoch"] == joined["epoch"]
        await sender.close()
        await listener.client.close()


async def test_d_history_trimmed_past_the_offset_says_too_old() -> None:
    env = dict(FAST_ENV, ROOMCAST_HISTORY_SIZE="10")
    with LocalCluster(2, node_env=env) as cluster:
        room = new_room()
        listener = await Receiver.join(cluster.nodes[0].url, room, "listener")
        sender = await Client.connect(cluster.nodes[1].url)
        await sender.join(room, "sender")
        await listener.client.close()
        for index in range(25):
            await sender.send(type="message", text=f"m{index}")
        await sender.recv_type("message", text="m24")
        joined = await listener.rejoin(cluster.url)
        assert joined["recovered"] is False and joined["reason"] == "too_old"
        assert joined["offset"] == listener.last + 25
        await listener.client.close()
        # Within the kept window, the same request recovers exactly what was missed.
        listener.last += 20
        joined = await listener.rejoin(cluster.url)
        assert joined["recovered"] is True
        texts = [(await listener.client.recv_type("message"))["text"] for _ in range(5)]
        assert texts == [f"m{i}" for i in range(20, 25)]
        # And the history request returns the last K, oldest first.
        await listener.client.send(type="history", limit=3)
        history = await listener.client.recv_type("history")
        assert [m["text"] for m in history["messages"]] == ["m22", "m23", "m24"]
        assert [m["offset"] for m in history["messages"]] == [
            joined["offset"] - 2, joined["offset"] - 1, joined["offset"],
        ]  # fmt: skip
        await sender.close()
        await listener.client.close()


async def presence_of(client: Client, room: str) -> dict[str, int]:
    await client.send(type="presence", room=room)
    event = await client.recv_type("presence", room=room)
    return {m["username"]: m["connections"] for m in event["members"]}


async def test_presence_across_three_nodes_follows_joins_and_leaves() -> None:
    with LocalCluster(3, node_env=FAST_ENV) as cluster:
        room = new_room()
        ann = [await Client.connect(node.url) for node in cluster.nodes[:2]]
        bob = await Client.connect(cluster.nodes[2].url)
        for client in ann:
            await client.join(room, "ann")
        await bob.join(room, "bob")
        for client in [*ann, bob]:
            assert await presence_of(client, room) == {"ann": 2, "bob": 1}
        await ann[0].send(type="leave", room=room)
        await ann[0].recv_type("left")
        await bob.recv_type("user_left", username="ann")
        assert await presence_of(bob, room) == {"ann": 1, "bob": 1}
        await ann[1].close()
        await bob.recv_type("user_left", username="ann")
        assert await presence_of(bob, room) == {"bob": 1}
        await ann[0].close()
        await bob.close()


async def test_ghosts_of_a_sigkilled_node_are_reaped_within_the_bound() -> None:
    ttl = 1.5
    env = dict(FAST_ENV, ROOMCAST_PRESENCE_TTL=str(ttl))
    with LocalCluster(3, node_env=env) as cluster:
        room = new_room()
        victim: NodeProcess = cluster.nodes[0]
        ghosts = [await Client.connect(victim.url) for _ in range(3)]
        for index, ghost in enumerate(ghosts):
            await ghost.join(room, f"ghost{index}")
        watcher = await Client.connect(cluster.nodes[1].url)
        await watcher.join(room, "watcher")
        other = await Client.connect(cluster.nodes[2].url)
        await other.join(room, "other")
        assert await presence_of(watcher, room) == {
            "ghost0": 1, "ghost1": 1, "ghost2": 1, "watcher": 1, "other": 1,
        }  # fmt: skip
        victim.process.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        gone = {(await watcher.recv_type("user_left", timeout=15))["username"] for _ in ghosts}
        elapsed = time.monotonic() - killed_at
        assert gone == {"ghost0", "ghost1", "ghost2"}
        # Bound: the TTL plus one heartbeat interval (TTL/3), plus scheduling slack.
        assert elapsed < scaled(ttl + ttl / 3 + 1.5), elapsed
        assert await presence_of(other, room) == {"watcher": 1, "other": 1}
        status, _ = http_get(f"{cluster.nodes[1].metrics_url}/healthz")
        assert status == 200
        await watcher.close()
        await other.close()


async def test_leave_lost_in_an_outage_is_repaired_when_redis_returns() -> None:
    """Redis unreachable (frozen, data kept) while a member leaves: its leave cannot be
    recorded then; when the node reconnects it makes presence match its members again."""
    env = dict(FAST_ENV, ROOMCAST_REDIS_TIMEOUT="1")
    with LocalCluster(2, node_env=env) as cluster:
        room = new_room()
        leaver = await Client.connect(cluster.nodes[0].url)
        stayer = await Client.connect(cluster.nodes[0].url)
        other = await Client.connect(cluster.nodes[1].url)
        await leaver.join(room, "leaver")
        await stayer.join(room, "stayer")
        await other.join(room, "other")
        assert await presence_of(other, room) == {"leaver": 1, "stayer": 1, "other": 1}
        assert cluster.redis is not None
        cluster.redis.signal(signal.SIGSTOP)
        try:
            for node in cluster.nodes:
                await until(partial(not_ready, node), 15, f"{node.node_id} not ready")
            await leaver.close()  # its leave cannot reach Redis now
        finally:
            cluster.redis.signal(signal.SIGCONT)
        for node in cluster.nodes:
            await until(partial(ready, node), 20, f"{node.node_id} ready")

        async def settled() -> dict[str, int]:
            return await presence_of(other, room)

        deadline = time.monotonic() + scaled(10)
        while (members := await settled()) != {"stayer": 1, "other": 1}:
            assert time.monotonic() < deadline, members
            await asyncio.sleep(0.1)  # the resync runs right after reconnecting; poll its effect
        await stayer.close()
        await other.close()
