"""Redis's process stopped (SIGSTOP: a VM paused, a container frozen, a debugger) then continued,
under 4 senders at 50 messages/s with members on 3 nodes that stay connected. Not ``CLIENT
PAUSE``: Redis reads nothing, answers nothing and publishes nothing, its sockets still accept.

Shorter than the nodes' Redis timeout (1 s here), the scripts queued in its sockets run when it
continues, within their deadline: acknowledged late, none refused. Longer, the nodes give up
(senders answered ``unavailable``, or ``unconfirmed`` when the lookup of a message whose link
died is itself late), and what Redis runs once continued past a script's deadline publishes
nothing. Either way the delivery guarantee holds (tests/support/delivery.py): every
acknowledged message reaches every member once, in order, or the member is told; nothing
refused is delivered.
"""

from __future__ import annotations

import asyncio
import signal

import pytest
from roomcast_dev.devcluster import LocalCluster

from tests.support.delivery import Traffic

pytestmark = pytest.mark.integration

ROOMS = ["north", "south"]
SHORT_STOP_SECONDS = 0.3  # a third of the nodes' Redis timeout (QUICK_ENV: 1 s)


def answered_wrongly(traffic: Traffic) -> int:
    return sum(len(s.refused) + len(s.unconfirmed) for s in traffic.senders)


@pytest.mark.parametrize("hold", ["shorter", "longer"])
async def test_redis_stopped_and_continued_under_traffic(
    quick_cluster: LocalCluster, hold: str
) -> None:
    cluster = quick_cluster
    assert cluster.redis is not None
    urls = [node.url for node in cluster.nodes]
    traffic = await Traffic.start(lambda i: urls[i % len(urls)], ROOMS)
    try:
        await traffic.more_acks(5)
        before = answered_wrongly(traffic)
        cluster.redis.signal(signal.SIGSTOP)
        try:
            if hold == "shorter":
                # The fault's own length, not a wait for something: nothing happens while Redis
                # is stopped (no ack, no delivery) that could be awaited instead.
                await asyncio.sleep(SHORT_STOP_SECONDS)
            else:
                # Past the 1 s timeout: every sender has had a message refused.
                await traffic.until(
                    lambda: all(s.refused or s.unconfirmed for s in traffic.senders),
                    20,
                    "a refusal per sender",
                )
        finally:
            cluster.redis.signal(signal.SIGCONT)
        await traffic.more_acks(10, timeout=30)
        await traffic.finish(timeout=30)
        print(f"\nRedis SIGSTOPped {hold} than the timeout: {traffic.summary()}")
        traffic.check()
        if hold == "shorter":
            assert answered_wrongly(traffic) == before, traffic.summary()
            assert all(not m.losses for m in traffic.members)
    finally:
        await traffic.close()
