"""A node drained (SIGTERM) while its clients' messages are in flight in Redis: every message it
handled is answered before its 1001 close, so a message without an answer at the close was never
published and may be sent again without a duplicate. Real redis-server and node processes."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from functools import partial

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster

from tests.support.cluster import FAST_ENV, QUICK_ENV, messages_published, until
from tests.support.delivery import awaiting, in_thread, join_member
from tests.support.wsclient import scaled

pytestmark = pytest.mark.integration

HELD = 20  # messages held in Redis when the drain starts


@pytest.fixture
def two_nodes() -> Iterator[LocalCluster]:
    with LocalCluster(2, nginx=False, node_env=QUICK_ENV) as running:
        yield running


async def test_drain_answers_every_message_it_handled(two_nodes: LocalCluster) -> None:
    cluster = two_nodes
    admin = redis.Redis(port=cluster.redis_port)
    draining, other = cluster.nodes
    sender = await join_member(draining.url, "drained", "sender")
    watcher = await join_member(other.url, "drained", "watcher")
    try:
        await sender.send_message("warm-up", "text of warm-up")
        await awaiting(sender, lambda: "warm-up" in sender.acked)
        before = await in_thread(partial(messages_published, draining))
        # Redis holds every script for 0.4 s (within their deadline: they will run).
        await in_thread(partial(admin.client_pause, 400, all=False))
        for index in range(HELD):
            await sender.send_message(f"held-{index}", f"text of held-{index}")
        await until(
            lambda: messages_published(draining) >= before + HELD,
            10,
            "messages sent to Redis",
        )
        draining.process.signal(signal.SIGTERM)
        await in_thread(partial(draining.process.popen.wait, scaled(15)))
        assert sender.reader is not None
        await sender.reader
        assert sender.ws.close_code == 1001
        # Redis runs in order: once the watcher's own later message is back, every held one
        # that ran was delivered.
        await watcher.send_message("after", "text of after")
        await awaiting(watcher, lambda: any(t == "text of after" for _, _, t in watcher.messages))
        delivered = {text for _, _, text in watcher.messages}
        answered = set(sender.acked) | sender.refused | sender.unconfirmed
        unanswered = [i for i in sender.texts if i not in answered]
        print(f"\ndrain with {HELD} held: acked {len(sender.acked)}, unanswered {unanswered}")
        assert not [i for i in unanswered if sender.texts[i] in delivered], "published, no answer"
        assert not [i for i in sender.refused if sender.texts[i] in delivered], "refused yet sent"
        assert all(sender.texts[i] in delivered for i in sender.acked)
        assert len(sender.acked) == HELD + 1  # held 0.4 s: each ran, and was acknowledged
    finally:
        await watcher.ws.close()
        admin.close()


DRAIN_S = 2.0


@pytest.fixture
def short_drain() -> Iterator[LocalCluster]:
    env = dict(FAST_ENV, ROOMCAST_DRAIN_TIMEOUT=str(DRAIN_S), ROOMCAST_REDIS_TIMEOUT="5")
    with LocalCluster(1, nginx=False, node_env=env) as running:
        yield running


async def test_a_node_exits_by_its_drain_deadline_while_redis_stalls(
    short_drain: LocalCluster,
) -> None:
    """Redis stops answering (CLIENT PAUSE) just before SIGTERM, with a member and its messages
    in flight: the node still exits within ROOMCAST_DRAIN_TIMEOUT (+ half a second for the
    broker's clean stop). Before: 7.1 s with a 2 s drain (the clean stop waited for Redis's 5 s
    timeout)."""
    cluster = short_drain
    node = cluster.nodes[0]
    admin = redis.Redis(port=cluster.redis_port)
    sender = await join_member(node.url, "stalled", "sender")
    try:
        await in_thread(partial(admin.client_pause, 20_000, all=True))
        for index in range(5):
            await sender.send_message(f"m{index}", f"text {index}")
        started = time.monotonic()
        node.process.signal(signal.SIGTERM)
        await in_thread(partial(node.process.popen.wait, scaled(20)))
        took = time.monotonic() - started
        print(f"\nexit {took:.2f} s after SIGTERM with Redis paused (drain {DRAIN_S:.0f} s)")
        assert took < DRAIN_S + scaled(0.5) + 0.5, took
        assert node.process.popen.returncode == 0
    finally:
        await in_thread(admin.client_unpause)
        admin.close()
