"""The Redis Cluster shard that owns the server API's control channel (``rc:{#control}``) down
for good (its primary and its replica SIGKILLed) after the nodes started: what an operator sees.

Every node subscribed to the control channel once, at start, so it stays ready: the other
shards' rooms work on every node, over WebSocket and the HTTP API. An order of the server API
cannot be published while the shard is down, so none can be missed by a node either: the
backend's order is answered 503 ``unavailable`` at once (never left hanging, never answered 202
for an order nobody heard), and the connections it named are left as they were. Once the shard is
back (restarted from its ``nodes.conf``), every node subscribes again by itself and hears the
next order."""

from __future__ import annotations

import asyncio
import json
from functools import partial

import pytest
from roomcast_dev.devcluster import LocalCluster, NodeProcess
from roomcast_dev.redis_topologies import RedisClusterTopology

from roomcast.broker import CONTROL_ROOM
from roomcast.broker.cluster_slots import sharded_channel, slot_of
from tests.integration.test_redis_cluster_shard_down import (
    CLUSTER_ENV,
    KEYED,
    answer_to,
    api,
    room_on,
)
from tests.support.cluster import ready, until
from tests.support.delivery import in_thread
from tests.support.httpclient import request
from tests.support.wsclient import Client, scaled

pytestmark = pytest.mark.integration


async def until_orders_reach(node: NodeProcess, nodes: int) -> int:
    """Send harmless orders through ``node`` until one is heard by ``nodes`` nodes (each
    subscribes to the control channel again by itself once its shard is back)."""
    told = 0
    async with asyncio.timeout(scaled(30)):
        while told < nodes:
            probe = await request(
                "POST",
                f"http://127.0.0.1:{node.port}/api/users/nobody/disconnect",
                json_body={},
                headers=KEYED,
            )
            if probe.status == 202:
                told = json.loads(probe.body)["nodes_told"]
            else:
                assert probe.status in (503, 504), probe.body
                await asyncio.sleep(0.1)  # the shard's return has no event to await
    return told


async def test_control_shard_down_nodes_stay_ready_and_orders_are_refused() -> None:
    with RedisClusterTopology(primaries=3, replicas=1) as topology:
        env = dict(CLUSTER_ENV, **topology.node_env())
        with LocalCluster(2, redis=False, nginx=False, node_env=env) as cluster:
            for node in cluster.nodes:
                await until(partial(ready, node), 20, f"{node.node_id} ready")
            control = topology.owner_of(slot_of(sharded_channel(CONTROL_ROOM)))
            down = next(p for p in topology.primaries() if p.port == control.port)
            (down_replica,) = topology.replicas_of(down)
            healthy = next(p for p in topology.primaries() if p.port != down.port)
            live_room = room_on(topology, healthy, "live")
            first, second = cluster.nodes
            alice = await Client.connect(first.url)
            bob = await Client.connect(second.url)
            await alice.join(live_room, "alice")
            await bob.join(live_room, "bob")

            await in_thread(down_replica.kill)
            await in_thread(down.kill)
            # An order of the server API: refused once the node saw the shard go (one sent
            # meanwhile may still find the dying link), never 202 for an order nobody heard.
            statuses: list[int] = []
            async with asyncio.timeout(scaled(20)):
                while not statuses or statuses[-1] != 503:
                    order = await request(
                        "POST",
                        f"http://127.0.0.1:{second.port}/api/users/bob/disconnect",
                        json_body={"reason": "test"},
                        headers=KEYED,
                    )
                    assert order.status in (503, 504), order.body
                    statuses.append(order.status)
            assert b"unavailable" in order.body, order.body
            # Bob was not disconnected (nothing was ordered), and the healthy shard's room works
            # on both nodes.
            await alice.send(type="message", room=live_room, text="still here", id="m1")
            assert (await alice.recv_where(answer_to("m1")))["type"] == "ack"
            await bob.recv_type("message", room=live_room, text="still here")
            posted = await request(
                "POST",
                api(second, live_room, "messages"),
                json_body={"text": "over http", "username": "backend"},
                headers=KEYED,
            )
            assert posted.status == 201, posted.body
            await alice.recv_type("message", room=live_room, text="over http")
            for node in cluster.nodes:
                assert await in_thread(partial(ready, node)), f"{node.node_id} not ready"

            # The shard back: orders are taken again, and heard by both nodes.
            await in_thread(partial(topology.restart, down))
            await in_thread(partial(topology.restart, down_replica))
            told = await until_orders_reach(first, len(cluster.nodes))
            order = await request(
                "POST",
                f"http://127.0.0.1:{first.port}/api/users/bob/disconnect",
                json_body={"reason": "back", "reconnect": False},
                headers=KEYED,
            )
            assert order.status == 202, order.body
            told_bob = await bob.recv_type("disconnect")
            assert told_bob["reason"] == "back", told_bob
            print(f"\ncontrol shard down: orders answered {statuses}; back: told {told} nodes")
            await alice.close()
            await bob.close()
