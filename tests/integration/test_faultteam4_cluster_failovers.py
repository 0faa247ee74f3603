"""A Redis Cluster shard fails over twice in a row while one of its rooms is idle.

The first failover (its primary SIGKILLed with writes its replicas never got) loses the room's
last acknowledged messages; nobody touches the room under the promoted replica, so the fence
that compares the room's lineage with ``master_replid2`` never runs there. Then that primary
dies too and the shard's last replica takes over: its ``master_replid2`` names the second
primary, not the first, and the room's lineage (the first primary's replid and node id) looked
like a slot migration's, so the room kept its epoch and its offset counter from before the
lost writes. The next messages were acknowledged at the lost ones' offsets in the same epoch,
and a client that had seen them rejoined with ``since`` was told ``recovered: true`` and never
got the new texts (it takes them for the ones it has).

The lag is made real as in ``test_redis_cluster_replica_lag.py``: ``CLIENT PAUSE ALL`` on both
replicas holds the replication stream, and the primary is SIGKILLed meanwhile.
"""

from __future__ import annotations

import asyncio
import json
from functools import partial
from typing import Any

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster, timeout_factor
from roomcast_dev.redis_topologies import RedisClusterTopology, RedisServer
from websockets.asyncio.client import connect

from roomcast.broker import scripts
from roomcast.broker.cluster_slots import sharded_channel, slot_of
from tests.support.cluster import FAST_ENV, http_get, ready, until
from tests.support.delivery import Position, Traffic, in_thread
from tests.support.wsclient import scaled

pytestmark = pytest.mark.integration

CLUSTER_ENV = dict(FAST_ENV, ROOMCAST_REDIS_TIMEOUT="1")


def room_on(topology: RedisClusterTopology, primary: RedisServer) -> str:
    for index in range(10_000):
        room = f"idleroom-{index}"
        if topology.owner_of(slot_of(sharded_channel(room))).port == primary.port:
            return room
    raise AssertionError("no room name hashes to the primary")


def replica_in_sync(server: RedisServer, primary: RedisServer) -> bool:
    try:
        replication = server.client().info("replication")
    except redis.RedisError:  # still paused
        return False
    return (
        replication["role"] == "slave"
        and int(replication["master_port"]) == primary.port
        and replication["master_link_status"] == "up"
    )


def answers(url: str) -> bool:
    return http_get(url, timeout=2)[0] == 200


async def send_some(urls: list[str], room: str, count: int) -> dict[Position, str]:
    """Two senders on two nodes, ``count`` acknowledged messages each; what was acknowledged."""
    traffic = await Traffic.start(lambda i: urls[i % len(urls)], [room], readers=1, senders=2)
    try:
        await traffic.more_acks(count, timeout=30)
        await traffic.finish(timeout=30)
        traffic.check()
        return traffic.acknowledged(room)
    finally:
        await traffic.close()


async def rejoin(url: str, room: str, since: Position) -> dict[str, Any]:
    """A client that saw the room up to ``since`` comes back: its ``joined``."""
    epoch, offset = since
    async with connect(url, open_timeout=scaled(10)) as ws:
        await asyncio.wait_for(ws.recv(), scaled(10))  # welcome
        join = {"type": "join", "room": room, "username": "back"}
        await ws.send(json.dumps(dict(join, since={"epoch": epoch, "offset": offset})))
        async with asyncio.timeout(scaled(10)):
            while True:
                event: dict[str, Any] = json.loads(await ws.recv())
                assert event["type"] != "error", event
                if event["type"] == "joined":
                    return event


async def test_room_idle_across_two_failovers_never_reuses_an_offset() -> None:
    with RedisClusterTopology(primaries=3, replicas=2) as topology:
        env = dict(CLUSTER_ENV, **topology.node_env())
        with LocalCluster(2, redis=False, nginx=False, node_env=env) as cluster:
            for node in cluster.nodes:
                await until(partial(ready, node), 20, f"{node.node_id} ready")
            first = topology.primaries()[0]
            replicas = topology.replicas_of(first)
            assert len(replicas) == 2
            room = room_on(topology, first)
            slot = slot_of(sharded_channel(room))
            urls = [node.url for node in cluster.nodes]

            before = await send_some(urls, room, 5)
            # Both replicas hold what they receive from now on; the pause ends by itself,
            # after the kill below.
            pause_ms = str(int(4000 * timeout_factor()))
            for replica in replicas:
                await in_thread(partial(replica.run, "CLIENT", "PAUSE", pause_ms, "ALL"))
            before |= await send_some(urls, room, 5)  # acknowledged, then lost by the crash
            await in_thread(first.kill)
            second = await in_thread(partial(topology.wait_for_new_owner, slot, first))
            seq_key = scripts.room_keys(room)[0]
            kept = int(await in_thread(partial(second.run, "GET", seq_key)))
            last_epoch, last_offset = max(before, key=lambda position: position[1])
            assert kept < last_offset, "the first failover lost nothing: no test"

            # Nobody touches the room under the second primary; its last replica follows it.
            (third,) = (replica for replica in replicas if replica.port != second.port)
            await until(partial(replica_in_sync, third, second), 30, "the last replica in sync")
            await in_thread(second.kill)
            assert await in_thread(partial(topology.wait_for_new_owner, slot, second)) == third

            # Each node reads the room again once it found the new primary (the first read
            # of the room there, like a join, passes the fence).
            for node in cluster.nodes:
                history = f"http://127.0.0.1:{node.port}/api/rooms/{room}/history?limit=1"
                await until(partial(answers, history), 30, f"{node.node_id} on the new primary")
            after = await send_some(urls, room, 10)
            # Two phases, two sets of messages: a position acknowledged in both names two.
            reused = sorted(set(after) & set(before))
            assert not reused, f"{len(reused)} offsets acknowledged twice: {reused}"
            assert {epoch for epoch, _ in after} != {last_epoch}
            joined = await rejoin(urls[0], room, (last_epoch, last_offset))
            assert joined["recovered"] is False, joined
            print(
                f"\ntwo failovers, the room idle between: {len(before)} acknowledged before, "
                f"{last_offset - kept} lost by the first failover, {len(after)} after, "
                f"rejoin from {last_epoch}/{last_offset}: {joined.get('reason')}"
            )
