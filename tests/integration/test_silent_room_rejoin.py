"""A rejoin with ``since`` into a room that never had a message, on REAL Redis (standalone,
Sentinel, Cluster) through a real node.

Its last member's leave used to delete the room's counter and epoch (so that joins and leaves
over fresh room names pin no key forever): a client alone in such a room that reconnected with
``since`` (offset 0 of its epoch) was told ``epoch_changed``, a history lost that never was. Now
the leave keeps them for the history ttl: the rejoin is ``recovered``. What really loses a room
(its keys gone: evicted, or Redis restarted empty) is still told ``epoch_changed``.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster, NodeProcess
from roomcast_dev.redis_topologies import RedisClusterTopology, SentinelTopology

from roomcast.broker.cluster_slots import slot_of
from roomcast.broker.scripts import room_keys
from tests.support.cluster import FAST_ENV, QUICK_ENV, http_get, metric_value, ready, until
from tests.support.previous_release import export_previous_release, start_old
from tests.support.wsclient import Client

pytestmark = pytest.mark.integration

KEPT_TTL = (
    60  # KEPT_SILENT_EPOCH_SECONDS: how long a silent room keeps its epoch after its last leave
)


@dataclass
class OneNode:
    """A node on one Redis topology, and the Redis that holds a given room's keys."""

    node: NodeProcess
    redis_of: Callable[[str], redis.Redis]


@pytest.fixture(scope="module", params=["standalone", "sentinel", "cluster"])
def one_node(request: pytest.FixtureRequest) -> Iterator[OneNode]:
    with contextlib.ExitStack() as stack:
        # The shipped limits: the join bucket is what bounds the epochs kept (test_f).
        env: dict[str, str] = {}
        redis_of: Callable[[str], redis.Redis]
        if request.param == "sentinel":
            sentinel = stack.enter_context(SentinelTopology(replicas=0))
            env.update(sentinel.node_env())
            redis_of = lambda _room: sentinel.primary().client()  # noqa: E731
        elif request.param == "cluster":
            shards = stack.enter_context(RedisClusterTopology(primaries=3, replicas=0))
            env.update(shards.node_env())
            redis_of = lambda room: shards.owner_of(slot_of(room_keys(room)[0])).client()  # noqa: E731
        standalone = request.param == "standalone"
        cluster = stack.enter_context(LocalCluster(1, nginx=False, redis=standalone, node_env=env))
        if standalone:
            port = cluster.redis_port
            redis_of = lambda _room: redis.Redis(port=port)  # noqa: E731
        yield OneNode(cluster.nodes[0], redis_of)


def fresh_room() -> str:
    return "silent-" + uuid.uuid4().hex[:10]


def line_key(room: str) -> bytes:
    return room_keys(room)[0].replace(b":seq", b":line")


async def join_alone_and_leave(node: NodeProcess, room: str, db: redis.Redis) -> dict[str, Any]:
    """Join a fresh room alone, disconnect, and wait until Redis has run the leave."""
    await until(partial(ready, node), 20, f"{node.node_id} ready")
    client = await Client.connect(node.url)
    joined = await client.join(room, "alone")
    assert joined["offset"] == 0
    await client.close()
    presence = room_keys(room)[3]
    await until(lambda: db.exists(presence) == 0, 10, "the leave to reach Redis")
    return joined


async def leave_in_turn(first: Client, last: Client, room: str, db: redis.Redis) -> None:
    """``first`` leaves the room, then ``last``: the leave that empties it runs last's code."""
    presence = room_keys(room)[3]
    await first.close()
    await until(lambda: db.hlen(presence) == 1, 10, "the first leave to reach Redis")
    await last.close()
    await until(lambda: db.exists(presence) == 0, 10, "the last leave to reach Redis")


async def rejoin_since(url: str, room: str, joined: dict[str, Any]) -> tuple[Client, Any]:
    client = await Client.connect(url)
    since = {"offset": joined["offset"], "epoch": joined["epoch"]}
    await client.send(type="join", room=room, username="alone", since=since)
    return client, await client.recv_type("joined", room=room)


async def assert_told_epoch_changed(url: str, room: str, joined: dict[str, Any]) -> None:
    """A rejoin with ``since`` is told the room's history was lost, and where it goes on."""
    client, rejoined = await rejoin_since(url, room, joined)
    assert rejoined["recovered"] is False and rejoined["reason"] == "epoch_changed", rejoined
    assert rejoined["epoch"] != joined["epoch"]
    await client.close()


async def test_a_rejoin_into_a_silent_room_is_told_nothing_was_lost(one_node: OneNode) -> None:
    room = fresh_room()
    db = one_node.redis_of(room)
    joined = await join_alone_and_leave(one_node.node, room, db)
    client, rejoined = await rejoin_since(one_node.node.url, room, joined)
    # On main's code: recovered false, epoch_changed, and a new epoch.
    assert rejoined["recovered"] is True, rejoined
    assert rejoined["epoch"] == joined["epoch"] and rejoined["offset"] == 0
    await client.send(type="message", room=room, text="first", id="m1")
    ack = await client.recv_type("ack", id="m1")
    assert ack["offset"] == 1 and ack["epoch"] == joined["epoch"]
    await client.close()


async def test_b_a_silent_room_whose_keys_were_lost_is_still_told(one_node: OneNode) -> None:
    room = fresh_room()
    db = one_node.redis_of(room)
    joined = await join_alone_and_leave(one_node.node, room, db)
    # What eviction under maxmemory does to it (volatile-ttl: keys with an expiry go first).
    seq, epoch, _, _ = room_keys(room)
    db.delete(seq, epoch, line_key(room))
    await assert_told_epoch_changed(one_node.node.url, room, joined)


async def test_c_redis_restarted_empty_between_leave_and_rejoin_is_told() -> None:
    with LocalCluster(1, nginx=False, node_env=QUICK_ENV) as cluster:
        node = cluster.nodes[0]
        room = fresh_room()
        db = redis.Redis(port=cluster.redis_port)
        joined = await join_alone_and_leave(node, room, db)
        db.close()
        cluster.kill_redis()
        cluster.start_redis()
        await until(partial(ready, node), 20, f"{node.node_id} ready again")
        await assert_told_epoch_changed(node.url, room, joined)


async def test_d_a_silent_room_keeps_its_keys_for_a_minute_only(one_node: OneNode) -> None:
    room = fresh_room()
    db = one_node.redis_of(room)
    joined = await join_alone_and_leave(one_node.node, room, db)
    # The epoch outlives the room's last member, with an expiry of a minute: joins and
    # leaves over fresh room names leave nothing behind for longer (docs/security.md).
    seq, epoch, history, presence = room_keys(room)
    assert db.get(epoch) == joined["epoch"].encode() and db.get(seq) == b"0"
    for key in (seq, epoch):
        assert 0 < db.ttl(key) <= KEPT_TTL
    # The lineage (fenced scripts) lives as long; nothing else stays.
    assert db.ttl(line_key(room)) in (-2, *range(1, KEPT_TTL + 1))
    assert db.exists(history, presence) == 0


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield export_previous_release(tmp_path_factory.mktemp("previous-release"))


async def test_e_rolling_upgrade_an_old_and_a_new_node_in_one_silent_room(
    previous_release: Path,
) -> None:
    with LocalCluster(1, nginx=False, node_env=dict(FAST_ENV)) as cluster:
        new = cluster.nodes[0]
        old = start_old(cluster, previous_release)
        for node in (new, old):
            await until(partial(ready, node), 20, f"{node.node_id} ready")
        db = redis.Redis(port=cluster.redis_port)
        # The last leave through the new node keeps the epoch; the old node's join finds it.
        room = fresh_room()
        on_old = await Client.connect(old.url)
        assert "user_id" not in on_old.welcome, "not a node of the previous release"
        await on_old.join(room, "alone")
        on_new = await Client.connect(new.url)
        joined = await on_new.join(room, "alone")
        await leave_in_turn(on_old, on_new, room, db)
        client, rejoined = await rejoin_since(old.url, room, joined)
        assert rejoined["recovered"] is True and rejoined["epoch"] == joined["epoch"], rejoined
        await client.close()
        # The last leave through an old node still deletes it (that node's code): until every
        # node is new, such a rejoin is told epoch_changed as before (docs/guarantees.md).
        room = fresh_room()
        on_old = await Client.connect(old.url)
        await on_old.join(room, "alone")
        on_new = await Client.connect(new.url)
        joined = await on_new.join(room, "alone")
        await leave_in_turn(on_new, on_old, room, db)
        await assert_told_epoch_changed(new.url, room, joined)
        db.close()


async def test_f_reconnect_churn_over_fresh_rooms_keeps_few_epochs(one_node: OneNode) -> None:
    """Open, join 16 fresh rooms, close, again: a close spends nothing of the join bucket, so
    without a price each such room would keep its keys for the history ttl (1,600 rooms a
    second per address). Each kept epoch costs a token of the client's bucket of kept epochs,
    at its join rate: at most its burst (40) plus its rate (5/s) of rooms keep theirs."""
    node = one_node.node
    await until(partial(ready, node), 20, f"{node.node_id} ready")
    rooms: list[str] = []
    started = time.monotonic()
    for _ in range(10):
        client = await Client.connect(node.url)
        for _ in range(16):
            room = fresh_room()
            await client.join(room, "churner")
            rooms.append(room)
        await client.close()
    presences = [room_keys(room)[3] for room in rooms]
    await until(
        lambda: all(
            one_node.redis_of(room).exists(presence) == 0
            for room, presence in zip(rooms, presences, strict=True)
        ),
        10,
        "every leave to reach Redis",
    )
    elapsed = time.monotonic() - started
    kept = [room for room in rooms if one_node.redis_of(room).exists(room_keys(room)[1])]
    print(f"\n160 fresh rooms joined and closed in {elapsed:.1f} s: {len(kept)} keep their epoch")
    # This address's bucket of kept epochs: 40, then 5/s (earlier tests took a few).
    assert 0 < len(kept) <= 40 + 1 + 5 * elapsed


def connections_open(node: NodeProcess) -> float:
    return metric_value(http_get(f"{node.metrics_url}/metrics")[1], "roomcast_connections_open")


async def test_g_the_node_alone_keeps_a_silent_rooms_epoch_too() -> None:
    """The in-memory broker (one node, no Redis) forgot such a room as the scripts did."""
    with LocalCluster(1, nginx=False, redis=False) as cluster:
        node = cluster.nodes[0]
        await until(partial(ready, node), 20, f"{node.node_id} ready")
        room = fresh_room()
        client = await Client.connect(node.url)
        joined = await client.join(room, "alone")
        await client.close()
        await until(lambda: connections_open(node) == 0, 10, "the node to see the close")
        client, rejoined = await rejoin_since(node.url, room, joined)
        assert rejoined["recovered"] is True and rejoined["epoch"] == joined["epoch"], rejoined
        await client.close()
