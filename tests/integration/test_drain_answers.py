"""A node drained (SIGTERM) while its clients' messages are in flight in Redis: every message it
handled is answered before its 1001 close, so a message without an answer at the close was never
published and may be sent again without a duplicate. Real redis-server and node processes."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from functools import partial

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster

from tests.support.cluster import FAST_ENV, http_get, metric_value, until
from tests.support.delivery import Member, in_thread, join_member
from tests.support.wsclient import scaled

pytestmark = pytest.mark.integration

QUICK_ENV = dict(FAST_ENV, ROOMCAST_REDIS_TIMEOUT="1")
HELD = 20  # messages held in Redis when the drain starts


@pytest.fixture
def two_nodes() -> Iterator[LocalCluster]:
    with LocalCluster(2, nginx=False, node_env=QUICK_ENV) as running:
        yield running


def published(cluster: LocalCluster) -> float:
    text = http_get(f"{cluster.nodes[0].metrics_url}/metrics")[1]
    return metric_value(text, "roomcast_messages_published_total", {"type": "message"})


async def awaiting(member: Member, condition: Callable[[], bool]) -> None:
    """Woken by each event ``member`` receives, until ``condition`` holds."""
    async with asyncio.timeout(scaled(10)):
        while not condition():
            member.changed.clear()
            if condition():
                break
            await member.changed.wait()


async def test_drain_answers_every_message_it_handled(two_nodes: LocalCluster) -> None:
    cluster = two_nodes
    admin = redis.Redis(port=cluster.redis_port)
    draining, other = cluster.nodes
    sender = await join_member(draining.url, "drained", "sender")
    watcher = await join_member(other.url, "drained", "watcher")
    try:
        await sender.send_message("warm-up", "text of warm-up")
        await awaiting(sender, lambda: "warm-up" in sender.acked)
        before = await in_thread(partial(published, cluster))
        # Redis holds every script for 0.4 s (within their deadline: they will run).
        await in_thread(partial(admin.client_pause, 400, all=False))
        for index in range(HELD):
            await sender.send_message(f"held-{index}", f"text of held-{index}")
        await until(lambda: published(cluster) >= before + HELD, 10, "messages sent to Redis")
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
