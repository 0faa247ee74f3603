"""The Redis Cluster shard that owns the server API's control channel (``rc:{#control}``) fails
over (its primary SIGKILLed, its replica promoted) while the nodes run: each node must subscribe
to the channel again on the new owner by itself, so that the server API's orders reach every
node's users again, and no node stays ready while deaf to orders."""

from __future__ import annotations

import json
from functools import partial

import pytest
from roomcast_dev.devcluster import LocalCluster
from roomcast_dev.redis_topologies import RedisClusterTopology

from roomcast.broker import CONTROL_ROOM
from roomcast.broker.cluster_slots import sharded_channel, slot_of
from tests.integration.test_redis_cluster_control_shard_down import until_orders_reach
from tests.integration.test_redis_cluster_shard_down import CLUSTER_ENV, KEYED, room_on
from tests.support.cluster import ready, until
from tests.support.delivery import in_thread
from tests.support.httpclient import request
from tests.support.wsclient import Client

pytestmark = pytest.mark.integration


async def test_control_shard_failover_orders_reach_every_node_again() -> None:
    with RedisClusterTopology(primaries=3, replicas=1) as topology:
        env = dict(CLUSTER_ENV, **topology.node_env())
        with LocalCluster(2, redis=False, nginx=False, node_env=env) as cluster:
            for node in cluster.nodes:
                await until(partial(ready, node), 20, f"{node.node_id} ready")
            slot = slot_of(sharded_channel(CONTROL_ROOM))
            control = topology.owner_of(slot)
            healthy = next(p for p in topology.primaries() if p.port != control.port)
            room = room_on(topology, healthy, "lobby")
            users = [await Client.connect(node.url) for node in cluster.nodes]
            for index, user in enumerate(users):
                await user.join(room, f"user{index}")

            await in_thread(control.kill)
            await in_thread(partial(topology.wait_for_new_owner, slot, control))
            told = await until_orders_reach(cluster.nodes[0], len(cluster.nodes))
            for index, user in enumerate(users):
                order = await request(
                    "POST",
                    f"http://127.0.0.1:{cluster.nodes[-1 - index].port}/api/users/user{index}"
                    "/disconnect",
                    json_body={"reason": "after the failover", "reconnect": False},
                    headers=KEYED,
                )
                assert order.status == 202, order.body
                assert json.loads(order.body)["nodes_told"] == len(cluster.nodes), order.body
                heard = await user.recv_type("disconnect")
                assert heard["reason"] == "after the failover", heard
            print(f"\ncontrol shard failed over: an order heard by {told} nodes, then each user's")
            for user in users:
                await user.close()
