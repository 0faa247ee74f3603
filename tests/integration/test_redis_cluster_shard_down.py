"""One Redis Cluster shard down for good (its primary and its replica SIGKILLed, no failover
possible) while the others work: rooms on the other shards keep working on every node, over
WebSocket and over the HTTP API alike; rooms on the down shard are refused with
``unavailable`` (never left unanswered); the nodes stay ready, since every node is equally
unable to serve the down shard's rooms (a readiness probe turning them all away would take the
healthy shards' rooms down too)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial

import pytest
from roomcast_dev.devcluster import LocalCluster, NodeProcess
from roomcast_dev.redis_topologies import RedisClusterTopology, RedisServer

from roomcast.admin import RoomcastAdmin
from roomcast.broker.cluster_slots import sharded_channel, slot_of
from tests.support.cluster import FAST_ENV, ready, until
from tests.support.delivery import in_thread
from tests.support.httpclient import request
from tests.support.wsclient import Client, Event, scaled

pytestmark = pytest.mark.integration

API_KEY = "shard-down-api-key-0123456789abcdef"
CLUSTER_ENV = dict(
    FAST_ENV,
    ROOMCAST_REDIS_TIMEOUT="1",
    ROOMCAST_API_RATE_PER_SECOND="5000",
    ROOMCAST_API_RATE_BURST="5000",
    ROOMCAST_API_KEYS=API_KEY,
)
KEYED = {"X-API-Key": API_KEY}


def room_on(topology: RedisClusterTopology, primary: RedisServer, prefix: str) -> str:
    for index in range(10_000):
        room = f"{prefix}-{index}"
        if topology.owner_of(slot_of(sharded_channel(room))).port == primary.port:
            return room
    raise AssertionError("no room name hashes to the primary")


def api(node: NodeProcess, room: str, endpoint: str) -> str:
    return f"http://127.0.0.1:{node.port}/api/rooms/{room}/{endpoint}"


def answer_to(request_id: str) -> Callable[[Event], bool]:
    return lambda event: event.get("id") == request_id and event["type"] in ("ack", "error")


async def test_one_shard_down_for_good_other_shards_rooms_keep_working() -> None:
    with RedisClusterTopology(primaries=3, replicas=1) as topology:
        env = dict(CLUSTER_ENV, **topology.node_env())
        with LocalCluster(2, redis=False, nginx=False, node_env=env) as cluster:
            for node in cluster.nodes:
                await until(partial(ready, node), 20, f"{node.node_id} ready")
            down, healthy = topology.primaries()[:2]
            (down_replica,) = topology.replicas_of(down)
            dead_room = room_on(topology, down, "dead")
            live_room = room_on(topology, healthy, "live")
            first, second = cluster.nodes
            alice = await Client.connect(first.url)
            bob = await Client.connect(second.url)
            for client, name in ((alice, "alice"), (bob, "bob")):
                await client.join(live_room, name)
                await client.join(dead_room, name)

            await in_thread(down_replica.kill)
            await in_thread(down.kill)
            # Every message to the down shard's room is answered: one in flight when the shard
            # died with ``unconfirmed`` (its reply was lost), and once the node saw the shard
            # go, with ``unavailable``.
            refused_after = 0
            async with asyncio.timeout(scaled(20)):
                while True:
                    request_id = f"dead-{refused_after}"
                    await alice.send(type="message", room=dead_room, text="x", id=request_id)
                    answer = await alice.recv_where(answer_to(request_id))
                    refused_after += 1
                    if answer["type"] == "error":
                        assert answer["code"] in ("unavailable", "unconfirmed"), answer
                        if answer["code"] == "unavailable":
                            break

            # The healthy shard's room works on every node: WebSocket ...
            await alice.send(type="message", room=live_room, text="over ws", id="live-ws")
            assert (await alice.recv_where(answer_to("live-ws")))["type"] == "ack"
            await bob.recv_type("message", room=live_room, text="over ws")
            # ... and the HTTP API (post, history), on either node.
            for node, text in ((first, "over http 1"), (second, "over http 2")):
                posted = await request(
                    "POST",
                    api(node, live_room, "messages"),
                    json_body={"text": text, "username": "backend"},
                    headers=KEYED,
                )
                assert posted.status == 201, posted.body
                await bob.recv_type("message", room=live_room, text=text)
                history = await request("GET", api(node, live_room, "history"), headers=KEYED)
                assert history.status == 200, history.body
                assert text in history.body.decode()
            # The down shard's room: refused, said so.
            posted = await request(
                "POST",
                api(first, dead_room, "messages"),
                json_body={"text": "y", "username": "b"},
                headers=KEYED,
            )
            assert posted.status == 503, posted.body
            # The server API: a broadcast answers per room, the down shard's room refused.
            admin = RoomcastAdmin(f"http://127.0.0.1:{second.port}", API_KEY, timeout=scaled(10))
            async with admin:
                results = await admin.broadcast([live_room, dead_room], "to all", "announcer")
            assert [(r.room, r.ok) for r in results] == [(live_room, True), (dead_room, False)]
            assert results[1].code == "unavailable", results
            await bob.recv_type("message", room=live_room, text="to all")
            # Ready: another node could not serve the down shard's rooms either.
            for node in cluster.nodes:
                assert await in_thread(partial(ready, node)), f"{node.node_id} not ready"
            print(f"\none shard down: {refused_after} sends to its room before the refusal")
            await alice.close()
            await bob.close()
