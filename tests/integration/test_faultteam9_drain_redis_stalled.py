"""Two faults close together: Redis stalls (SIGSTOP: a VM paused, a fork on a large dataset, a
container frozen) just as a node is drained, with a drain shorter than twice the Redis timeout
(an orchestrator's short grace period). The drain waits for its messages' answers at most half
its time, then closes its clients with 1001 and exits; Redis, continued within the messages'
deadline, reads what waits in the gone node's socket and runs it: the messages are published
to the room after their sender was closed.

The promise (docs/guarantees.md, "A node is drained"): a message without an answer at a 1001
close was never published. So each message the node handled and could not answer in time must
be answered before the close, ``unconfirmed`` (it may or may not run), never left without an
answer while Redis may still publish it. Before, the 12 held messages were all unanswered at
the 1001 and all delivered to the member on the other node.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from functools import partial

import pytest
from roomcast_dev.devcluster import LocalCluster

from tests.support.cluster import FAST_ENV, messages_published, until
from tests.support.delivery import awaiting, in_thread, join_member
from tests.support.wsclient import scaled

pytestmark = pytest.mark.integration

HELD = 12  # messages in Redis's socket when the drain starts
DRAIN_S = 2.0  # the drain waits for answers half of it
# Redis is continued well within the held messages' deadline (sent + the Redis timeout).
ENV = dict(FAST_ENV, ROOMCAST_DRAIN_TIMEOUT=str(DRAIN_S), ROOMCAST_REDIS_TIMEOUT="10")


@pytest.fixture
def two_nodes() -> Iterator[LocalCluster]:
    with LocalCluster(2, nginx=False, node_env=ENV) as running:
        yield running


async def test_redis_stalled_while_a_node_drains_leaves_no_published_message_unanswered(
    two_nodes: LocalCluster,
) -> None:
    cluster = two_nodes
    redis = cluster.redis
    assert redis is not None
    draining, other = cluster.nodes
    sender = await join_member(draining.url, "stalled-drain", "sender")
    watcher = await join_member(other.url, "stalled-drain", "watcher")
    try:
        await sender.send_message("warm-up", "text of warm-up")
        await awaiting(sender, lambda: "warm-up" in sender.acked)
        before = await in_thread(partial(messages_published, draining))
        redis.signal(signal.SIGSTOP)
        try:
            for index in range(HELD):
                await sender.send_message(f"held-{index}", f"text of held-{index}")
            # Handed to Redis (its socket takes them while it is stopped).
            await until(lambda: messages_published(draining) >= before + HELD, 10, "messages sent")
            draining.process.signal(signal.SIGTERM)
            await in_thread(partial(draining.process.popen.wait, scaled(15)))
        finally:
            redis.signal(signal.SIGCONT)
        assert sender.reader is not None
        await sender.reader
        assert sender.ws.close_code == 1001
        # Redis reads its sockets in the order their bytes came: once the watcher's own later
        # message is back, every held one that ran was delivered.
        await watcher.send_message("after", "text of after")
        await awaiting(watcher, lambda: any(t == "text of after" for _, _, t in watcher.messages))
        delivered = {text for _, _, text in watcher.messages}
        held = [f"held-{index}" for index in range(HELD)]
        answered = set(sender.acked) | sender.refused | sender.unconfirmed
        unanswered = [i for i in held if i not in answered]
        ran = [i for i in held if sender.texts[i] in delivered]
        print(
            f"\nRedis stopped through a {DRAIN_S:.0f} s drain: acked {len(sender.acked)}, "
            f"unconfirmed {len(sender.unconfirmed)}, refused {len(sender.refused)}, "
            f"unanswered {len(unanswered)}; run by Redis once continued: {len(ran)}"
        )
        # The fault is real: Redis ran the held messages after the node had gone.
        assert ran, "no held message was run: the stall did not outlast the drain"
        assert not [i for i in unanswered if i in ran], "published, no answer at the 1001"
        assert not [i for i in sender.refused if i in ran], "refused, yet published"
        assert all(sender.texts[i] in delivered for i in sender.acked)
    finally:
        redis.signal(signal.SIGCONT)
        await watcher.ws.close()
