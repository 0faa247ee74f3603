"""Half-open Redis links: on one node, Redis's replies (the command link) or publications (the
subscriber link) stop coming back mid-burst while everything the node sends still reaches
Redis, and nothing is closed; then they all arrive at once, late, past the scripts' deadlines.
Every acknowledged message reaches every member, on that node and another, once and in order,
or a ``loss`` covers it; nothing refused is delivered; every message is answered (see
``tests/support/delivery.py``)."""

from __future__ import annotations

import asyncio
from functools import partial

import pytest
from roomcast_dev.devcluster import LocalCluster

from tests.adversarial.redis_relay import RedisRelay
from tests.support.cluster import FAST_ENV, ready, until
from tests.support.delivery import Traffic, in_thread
from tests.support.wsclient import scaled

pytestmark = pytest.mark.integration

REDIS_TIMEOUT_S = 1.0
ENV = dict(FAST_ENV, ROOMCAST_REDIS_TIMEOUT=str(REDIS_TIMEOUT_S))


@pytest.mark.parametrize("held", ["command", "subscriber"])
async def test_replies_held_then_released_late_lose_no_ack(held: str) -> None:
    with LocalCluster(1, nginx=False, node_env=ENV) as cluster:
        relay = RedisRelay(cluster.redis_port)
        relay_port = await relay.start()
        try:
            relayed = await in_thread(
                partial(
                    cluster.start_node, {"ROOMCAST_REDIS_URL": f"redis://127.0.0.1:{relay_port}"}
                )
            )
            other = cluster.nodes[0]
            for node in (relayed, other):
                await until(partial(ready, node), 20, f"{node.node_id} ready")
            # Readers on the relayed node and the other, senders on the relayed node.
            urls = [relayed.url, other.url, relayed.url, relayed.url, relayed.url]
            traffic = await Traffic.start(lambda i: urls[i], ["half-open"], readers=2, senders=3)
            try:
                await traffic.more_acks(5)
                assert relay.hold_answers(subscriber=held == "subscriber")
                # Held for two and a half Redis timeouts: past every deadline sent meanwhile.
                hold_s = scaled(REDIS_TIMEOUT_S * 2.5)
                await asyncio.sleep(hold_s)
                relay.release.set()
                await traffic.more_acks(10, timeout=30)
                await traffic.finish(timeout=30)
                print(f"\nhalf-open {held} link held {hold_s} s: {traffic.summary()}")
                traffic.check()
            finally:
                await traffic.close()
        finally:
            await relay.close()
