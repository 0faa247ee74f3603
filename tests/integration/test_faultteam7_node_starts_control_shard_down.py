"""A node started while the Redis Cluster shard owning the server API's control channel
(``rc:{#control}``) is down (its primary and its replica SIGKILLed): the docs say it is not
ready until it has subscribed, since an order published meanwhile would miss its users. It must
not stay that way: once the shard is back (restarted from its ``nodes.conf``), the node
subscribes by itself, turns ready, and the server API's orders reach its connections like
every other node's."""

from __future__ import annotations

import json
from functools import partial

import pytest
from roomcast_dev.devcluster import LocalCluster
from roomcast_dev.redis_topologies import RedisClusterTopology

from roomcast.broker import CONTROL_ROOM
from roomcast.broker.cluster_slots import sharded_channel, slot_of
from tests.integration.test_redis_cluster_control_shard_down import until_orders_reach
from tests.integration.test_redis_cluster_shard_down import CLUSTER_ENV, KEYED, answer_to, room_on
from tests.support.cluster import not_ready, ready, until
from tests.support.delivery import in_thread
from tests.support.httpclient import request
from tests.support.wsclient import Client

pytestmark = pytest.mark.integration


async def test_node_started_while_the_control_shard_is_down_becomes_ready_and_hears_orders() -> (
    None
):
    with RedisClusterTopology(primaries=3, replicas=1) as topology:
        env = dict(CLUSTER_ENV, **topology.node_env())
        with LocalCluster(1, redis=False, nginx=False, node_env=env) as cluster:
            (first,) = cluster.nodes
            await until(partial(ready, first), 20, "node-1 ready")
            control = topology.owner_of(slot_of(sharded_channel(CONTROL_ROOM)))
            down = next(p for p in topology.primaries() if p.port == control.port)
            (down_replica,) = topology.replicas_of(down)
            healthy = next(p for p in topology.primaries() if p.port != down.port)
            live_room = room_on(topology, healthy, "live")

            await in_thread(down_replica.kill)
            await in_thread(down.kill)
            late = await in_thread(cluster.start_node)
            # Not ready while it cannot hear orders: a probe would keep it out of a Service.
            await until(partial(not_ready, late), 20, "the late node not ready")
            for _ in range(5):
                assert await in_thread(partial(not_ready, late)), "ready without the control link"

            await in_thread(partial(topology.restart, down))
            await in_thread(partial(topology.restart, down_replica))
            await until(partial(ready, late), 30, "the late node ready once the shard is back")

            bob = await Client.connect(late.url)
            await bob.join(live_room, "bob")
            await bob.send(type="message", room=live_room, text="hello", id="m1")
            assert (await bob.recv_where(answer_to("m1")))["type"] == "ack"
            # An order taken by the other node reaches the late node's user.
            await until_orders_reach(first, 2)
            order = await request(
                "POST",
                f"http://127.0.0.1:{first.port}/api/users/bob/disconnect",
                json_body={"reason": "late", "reconnect": False},
                headers=KEYED,
            )
            assert order.status == 202, order.body
            assert json.loads(order.body)["nodes_told"] == 2, order.body
            told_bob = await bob.recv_type("disconnect")
            assert told_bob["reason"] == "late", told_bob
            await bob.close()
