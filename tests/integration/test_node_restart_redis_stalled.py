"""A node SIGKILLed and started again while Redis is stalled (SIGSTOP: every connection is
accepted by the kernel, nothing is answered), then Redis wakes up. The new node must not wedge
on links that never answered its setup: it opens its port not ready, refuses joins with
``unavailable`` meanwhile, becomes ready by itself once Redis answers, and the killed node's
member rejoining there with ``since`` gets every acknowledged message it missed, exactly once,
in order (Redis lost nothing: the epoch is the same)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from functools import partial

import pytest
from roomcast_dev.devcluster import LocalCluster

from tests.support.cluster import FAST_ENV, ready, until
from tests.support.delivery import in_thread
from tests.support.wsclient import Client, Event, scaled

pytestmark = pytest.mark.integration

ENV = dict(FAST_ENV, ROOMCAST_REDIS_TIMEOUT="1")
ROOM = "stalled-restart"


def answer_to(request_id: str) -> Callable[[Event], bool]:
    return lambda event: event.get("id") == request_id and event["type"] in ("ack", "error")


async def send_all(sender: Client, prefix: str, count: int) -> dict[str, Event]:
    """Stop-and-wait: each message's answer before the next."""
    answers: dict[str, Event] = {}
    for index in range(count):
        request_id = f"{prefix}-{index}"
        await sender.send(type="message", room=ROOM, text=request_id, id=request_id)
        answers[request_id] = await sender.recv_where(answer_to(request_id), timeout=20)
    return answers


async def test_node_restarted_while_redis_is_stalled_then_member_rejoins_with_since() -> None:
    with LocalCluster(2, nginx=False, node_env=ENV) as cluster:
        doomed, steady = cluster.nodes
        receiver = await Client.connect(doomed.url)
        sender = await Client.connect(steady.url)
        joined = await receiver.join(ROOM, "receiver")
        await sender.join(ROOM, "sender")
        epoch = joined["epoch"]
        seen: list[tuple[str, int, str]] = []
        before = await send_all(sender, "before", 10)
        assert all(a["type"] == "ack" for a in before.values())
        while len(seen) < 10:
            event = await receiver.recv_type("message", room=ROOM)
            seen.append((event["epoch"], event["offset"], event["text"]))
        last_offset = seen[-1][1]

        await in_thread(partial(doomed.process.signal, signal.SIGKILL))
        missed = await send_all(sender, "missed", 10)
        assert all(a["type"] == "ack" for a in missed.values())
        assert cluster.redis is not None
        cluster.redis.signal(signal.SIGSTOP)
        try:
            stalled = await send_all(sender, "stalled", 3)
            restarted = await in_thread(cluster.start_node)
            assert not await in_thread(partial(ready, restarted))
            rejoiner = await Client.connect(restarted.url)
            since = {"epoch": epoch, "offset": last_offset}
            await rejoiner.send(type="join", room=ROOM, username="receiver", since=since)
            refused = await rejoiner.recv_type("error", timeout=20)
            assert refused["code"] == "unavailable", refused
        finally:
            cluster.redis.signal(signal.SIGCONT)
        # The steady node's links gave up on the stalled Redis too: it reconnects by itself.
        for node in (restarted, steady):
            await until(partial(ready, node), 20, f"{node.node_id} ready")

        await rejoiner.send(type="join", room=ROOM, username="receiver", since=since)
        rejoined = await rejoiner.recv_type("joined", room=ROOM, timeout=20)
        assert rejoined["recovered"] is True, rejoined
        assert rejoined["epoch"] == epoch
        after = await send_all(sender, "after", 5)
        assert all(a["type"] == "ack" for a in after.values()), after
        acked = {
            (a["epoch"], a["offset"]): text
            for text, a in {**missed, **stalled, **after}.items()
            if a["type"] == "ack"
        }
        got: list[tuple[str, int, str]] = []
        async with asyncio.timeout(scaled(20)):
            while not set(acked) <= {(e, o) for e, o, _ in got}:
                event = await rejoiner.recv_type("message", room=ROOM)
                got.append((event["epoch"], event["offset"], event["text"]))
        offsets = [o for _, o, _ in got]
        assert offsets == list(range(last_offset + 1, last_offset + 1 + len(got))), offsets
        assert all(acked.get((e, o), t) == t for e, o, t in got)
        outcomes = [a.get("code", "ack") for a in stalled.values()]
        print(
            f"\nnode restarted while redis stalled: {len(got)} messages recovered after offset "
            f"{last_offset}, stalled sends answered {outcomes}"
        )
        for client in (receiver, sender, rejoiner):
            await client.close()
