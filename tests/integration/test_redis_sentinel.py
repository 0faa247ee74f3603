"""Sentinel mode against REAL servers: one primary, one replica, three sentinels (Debian's
redis-server); the primary is SIGKILLed, Sentinel promotes the replica, the nodes follow."""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster
from roomcast_dev.redis_topologies import SentinelTopology

from tests.support.cluster import FAST_ENV, http_get, metric_value, not_ready, ready, until
from tests.support.wsclient import Client, clients_on_distinct_nodes

pytestmark = pytest.mark.integration


@pytest.fixture
def sentinel_nodes() -> Iterator[tuple[SentinelTopology, LocalCluster]]:
    with SentinelTopology(replicas=1, sentinels=3) as topology:
        env = dict(FAST_ENV, ROOMCAST_REDIS_TIMEOUT="1", **topology.node_env())
        with LocalCluster(3, redis=False, node_env=env) as cluster:
            yield topology, cluster


async def test_failover_nodes_follow_the_new_primary(
    sentinel_nodes: tuple[SentinelTopology, LocalCluster],
) -> None:
    topology, cluster = sentinel_nodes
    for node in cluster.nodes:
        await until(partial(ready, node), 20, f"{node.node_id} ready")
    old_primary = topology.primary()
    alice, bob = await clients_on_distinct_nodes(cluster.url, 2)
    room = "sentinel-room"
    try:
        joined = await alice.join(room, "alice")
        await bob.join(room, "bob")
        for index in range(5):
            await alice.send(type="message", room=room, text=f"before {index}")
        for index in range(5):
            assert (await bob.recv_type("message", room=room))["text"] == f"before {index}"
        assert old_primary.client().exists(f"rc:{{{room}}}:seq") == 1

        killed_at = time.monotonic()
        old_primary.kill()
        for node in cluster.nodes:
            await until(partial(not_ready, node), 10, f"{node.node_id} not ready")
        new_primary = topology.wait_for_failover(old_primary.port)
        promoted_after = time.monotonic() - killed_at
        for node in cluster.nodes:
            await until(partial(ready, node), 20, f"{node.node_id} ready on the new primary")
        followed_after = time.monotonic() - killed_at
        print(
            f"\nsentinel failover: promoted after {promoted_after:.2f} s, "
            f"every node ready again after {followed_after:.2f} s"
        )

        # Nobody rejoined: the nodes resubscribed on the new primary by themselves.
        await alice.send(type="message", room=room, text="after failover")
        # The new primary cannot know what the dead one had not replicated: the room starts a
        # new epoch rather than hand out offsets that members may have seen with other texts.
        loss = await bob.recv_type("loss", room=room)
        assert (loss["reason"], loss["epoch"]) == ("epoch_changed", joined["epoch"])
        event = await bob.recv_type("message", room=room, text="after failover")
        assert event["epoch"] != joined["epoch"] and event["offset"] == 1
        assert new_primary.client().exists(f"rc:{{{room}}}:seq") == 1
        # Presence is on the new primary (kept by replication, resynced by the nodes).
        await alice.send(type="presence", room=room)
        presence = await alice.recv_type("presence", room=room)
        assert sorted(m["username"] for m in presence["members"]) == ["alice", "bob"]
        # A client that saw up to offset 2 of the old epoch is told to reload.
        late = await Client.connect(cluster.nodes[0].url)
        await late.send(
            type="join", room=room, username="late", since={"offset": 2, "epoch": joined["epoch"]}
        )
        rejoined = await late.recv_type("joined", room=room)
        assert (rejoined["recovered"], rejoined["reason"]) == (False, "epoch_changed")
        assert (rejoined["epoch"], rejoined["offset"]) == (event["epoch"], 1)
        await late.close()
        metrics = http_get(f"{cluster.nodes[0].metrics_url}/metrics")[1]
        assert metric_value(metrics, "roomcast_redis_connected") == 1
        assert metric_value(metrics, "roomcast_redis_reconnects_total") >= 1
    finally:
        await alice.close()
        await bob.close()


async def test_password_protected_sentinels_and_primary_and_a_failover_between_them() -> None:
    """Sentinels with their own requirepass, a primary with another: nodes given both chat,
    follow a failover, and a node with a wrong sentinel password stays not ready and says why."""
    with SentinelTopology(
        replicas=1, sentinels=3, password="primary-pw-1", sentinel_password="sentinel-pw-2"
    ) as topology:
        # Without their password the sentinels refuse even to name the primary.
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=topology.sentinels[0].port).execute_command(  # type: ignore[no-untyped-call]
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", topology.MASTER_NAME
            )
        env = dict(FAST_ENV, ROOMCAST_REDIS_TIMEOUT="1", **topology.node_env())
        with LocalCluster(2, redis=False, node_env=env) as cluster:
            for node in cluster.nodes:
                await until(partial(ready, node), 20, f"{node.node_id} ready")
            alice, bob = await clients_on_distinct_nodes(cluster.url, 2)
            room = "sentinel-auth-room"
            try:
                await alice.join(room, "alice")
                await bob.join(room, "bob")
                await alice.send(type="message", room=room, text="behind two passwords")
                assert (await bob.recv_type("message", room=room))["offset"] == 1

                old_primary = topology.primary()
                old_primary.kill()
                topology.wait_for_failover(old_primary.port)
                for node in cluster.nodes:
                    await until(partial(ready, node), 20, f"{node.node_id} ready after failover")
                await alice.send(type="message", room=room, text="after the failover")
                event = await bob.recv_type("message", room=room, text="after the failover")
                assert event["offset"] == 1  # a new epoch: see test_failover_nodes_follow…
            finally:
                await alice.close()
                await bob.close()

            wrong = cluster.start_node({"ROOMCAST_REDIS_SENTINEL_PASSWORD": "not-the-password"})
            line = wrong.process.wait_for_line(lambda text: "redis connect failed" in text, 20)
            assert "AuthenticationError" in line, line
            assert "not-the-password" not in "\n".join(wrong.process.lines)
            assert not ready(wrong)
            metrics = http_get(f"{wrong.metrics_url}/metrics")[1]
            assert metric_value(metrics, "roomcast_redis_connected") == 0
