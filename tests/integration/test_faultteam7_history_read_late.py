"""A node's subscriber link is re-made while its command link does not answer (after a Sentinel
failover the two links find the new primary one after the other, seconds apart; here Redis's
replies on the command link are held by a relay, then the link is dropped by the node's
watchdog and made again). The gap filler's history read waits for the command link; meanwhile
the subscriber link receives the room's messages live and the gap filler holds them. By the time
history answers, it was trimmed past the last offset the node handed over.

Every message was received by the node, so none may be announced lost: before, each member of
that node (WebSocket and event stream alike) was told ``too_old`` for every offset older than
the late history read, and the held live messages carrying them were dropped as duplicates.
"""

from __future__ import annotations

from functools import partial

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster

from tests.adversarial.redis_relay import RedisRelay
from tests.support.cluster import FAST_ENV, ready, until
from tests.support.delivery import Member, Traffic, in_thread, join_member
from tests.support.event_streams import follow_stream

pytestmark = pytest.mark.integration

ROOM = "late-read"
HISTORY = 30
ENV = dict(FAST_ENV, ROOMCAST_REDIS_TIMEOUT="2", ROOMCAST_HISTORY_SIZE=str(HISTORY))


async def burst(traffic: Traffic, senders: list[Member], acked: int) -> None:
    """Rounds of messages until ``acked`` more are acknowledged (some may be refused while
    the senders' node subscribes again)."""
    wanted = traffic.acks() + acked
    while traffic.acks() < wanted:
        for sender in senders:
            for _ in range(10):
                request_id = f"{sender.name}-{len(sender.texts)}"
                await sender.send_message(request_id, f"text of {request_id}")
        await traffic.until(lambda: all(s.pending == 0 for s in senders), 20, "answers")


async def test_messages_held_while_history_is_read_late_are_not_announced_lost() -> None:
    with LocalCluster(1, nginx=False, node_env=ENV) as cluster:
        relay = RedisRelay(cluster.redis_port)
        relay_port = await relay.start()
        admin = redis.Redis(port=cluster.redis_port)
        try:
            relayed = await in_thread(
                partial(
                    cluster.start_node, {"ROOMCAST_REDIS_URL": f"redis://127.0.0.1:{relay_port}"}
                )
            )
            other = cluster.nodes[0]
            for node in (relayed, other):
                await until(partial(ready, node), 20, f"{node.node_id} ready")
            members = [await join_member(relayed.url, ROOM, f"reader-{i}") for i in range(2)]
            stream = await follow_stream(relayed.port, ROOM, "stream")
            members += [stream.member, await join_member(other.url, ROOM, "reader-other")]
            senders = [await join_member(other.url, ROOM, f"sender-{i}") for i in range(2)]
            traffic = Traffic([*members, *senders], senders, interval=0)
            try:
                await burst(traffic, senders, 6)
                await traffic.until(lambda: not traffic.missing(), 20, "first messages")

                subscribed = sum(1 for link in relay.links if link.subscriber)
                assert relay.hold_answers(subscriber=False) >= 1
                await in_thread(partial(admin.client_kill_filter, _type="pubsub"))
                # The relayed node subscribed again (its confirmation is not held): its gap
                # filler now reads history on the held command link.
                await until(
                    lambda: sum(1 for link in relay.links if link.subscriber) > subscribed,
                    20,
                    "the relayed node's new subscriber link",
                )
                await burst(traffic, senders, 3 * HISTORY)
                await traffic.finish(timeout=30)
                print(f"\nhistory read late: {traffic.summary()}")
                traffic.check()
                told = {
                    m.name: [(e["from_offset"], e["to_offset"]) for e in m.losses] for m in members
                }
                assert not any(told.values()), told
            finally:
                await traffic.close()
        finally:
            admin.close()
            await relay.close()
