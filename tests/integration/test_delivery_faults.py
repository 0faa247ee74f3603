"""The delivery guarantee under the Redis faults an operator meets, with members that stay
connected and steady traffic: Redis SIGKILLed and restarted empty, the nodes' subscriber links
killed (``CLIENT KILL TYPE pubsub``) or overflowing ``client-output-buffer-limit pubsub``, and a
Sentinel failover. Each acknowledged message reaches every member once and in order, or the
member is told with a ``loss`` event; nothing refused is ever delivered (see ``delivery.py``).
"""

from __future__ import annotations

from functools import partial

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster
from roomcast_dev.redis_topologies import SentinelTopology

from tests.support.cluster import QUICK_ENV, http_get, metric_value, ready, until
from tests.support.delivery import Traffic, in_thread

pytestmark = pytest.mark.integration

ROOMS = ["north", "south"]


def reconnects(cluster: LocalCluster) -> float:
    return sum(
        metric_value(http_get(f"{n.metrics_url}/metrics")[1], "roomcast_redis_reconnects_total")
        for n in cluster.nodes
    )


async def test_redis_killed_and_restarted_empty_under_traffic(
    quick_cluster: LocalCluster,
) -> None:
    cluster = quick_cluster
    traffic = await Traffic.start(cluster.url, ROOMS)
    try:
        assert len({m.node for m in traffic.members}) == 3  # nginx spread them
        await traffic.more_acks(5)
        await in_thread(cluster.kill_redis)
        await in_thread(cluster.start_redis)  # same port, nothing kept
        await traffic.more_acks(10, timeout=30)
        await traffic.finish()
        print(f"\nredis restarted empty: {traffic.summary()}")
        traffic.check()
        epochs = {e for s in traffic.senders for e, _ in s.acked.values()}
        assert len(epochs) >= 2 * len(ROOMS)  # every room did start over
        for member in traffic.members:
            # Told at once (not only if a later message showed the new epoch): one notice of
            # the epoch change, naming where the old epoch was left.
            changes = [e for e in member.losses if e["reason"] == "epoch_changed"]
            assert len(changes) == 1, member.losses
            assert changes[0]["room"] == member.room
    finally:
        await traffic.close()


async def test_subscriber_links_killed_by_redis_lose_nothing(quick_cluster: LocalCluster) -> None:
    cluster = quick_cluster
    admin = redis.Redis(port=cluster.redis_port)
    traffic = await Traffic.start(cluster.url, ROOMS)
    try:
        before = await in_thread(partial(reconnects, cluster))
        await traffic.more_acks(5)
        for _ in range(3):
            killed = await in_thread(partial(admin.client_kill_filter, _type="pubsub"))
            assert killed >= 3  # one subscriber per node
            await traffic.more_acks(5)
        await traffic.finish()
        print(f"\nCLIENT KILL TYPE pubsub x3: {traffic.summary()}")
        traffic.check()
        # Redis kept its data: every gap is filled from history, nothing is announced lost.
        assert all(not member.losses for member in traffic.members)
        assert await in_thread(partial(reconnects, cluster)) >= before + 9
    finally:
        await traffic.close()
        admin.close()


async def test_pubsub_output_buffer_overflow_loses_nothing(quick_cluster: LocalCluster) -> None:
    cluster = quick_cluster
    admin = redis.Redis(port=cluster.redis_port)
    traffic = await Traffic.start(cluster.url, ROOMS)
    try:
        before = await in_thread(partial(reconnects, cluster))
        await traffic.more_acks(5)
        # A subscriber whose pending output passes 4 KiB is cut off by Redis at once: each of
        # these 20 KB messages overflows every node's subscriber link when it is published.
        admin.config_set("client-output-buffer-limit", "pubsub 4096 0 0")
        big = traffic.senders[0]
        for index in range(3):
            await big.send_message(f"big-{index}", f"{index}" * 20_000)
            await traffic.more_acks(3)
        admin.config_set("client-output-buffer-limit", "pubsub 32mb 8mb 60")
        await traffic.finish()
        print(f"\npub/sub output buffer overflow x3: {traffic.summary()}")
        traffic.check()
        assert all(not member.losses for member in traffic.members)
        assert await in_thread(partial(reconnects, cluster)) >= before + 3
        for member in traffic.members:
            if member.room == big.room:
                texts = {text for _, _, text in member.messages}
                assert all(f"{i}" * 20_000 in texts for i in range(3))
    finally:
        await traffic.close()
        admin.close()


async def test_sentinel_failover_under_traffic() -> None:
    with SentinelTopology(replicas=1, sentinels=3) as topology:
        env = dict(QUICK_ENV, **topology.node_env())
        with LocalCluster(3, redis=False, node_env=env) as cluster:
            for node in cluster.nodes:
                await until(partial(ready, node), 20, f"{node.node_id} ready")
            traffic = await Traffic.start(cluster.url, ROOMS)
            try:
                await traffic.more_acks(5)
                old_primary = topology.primary()
                old_primary.kill()
                await in_thread(partial(topology.wait_for_failover, old_primary.port))
                await traffic.more_acks(10, timeout=30)
                await traffic.finish()
                print(f"\nsentinel failover: {traffic.summary()}")
                traffic.check()
            finally:
                await traffic.close()
