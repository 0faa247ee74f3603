"""Attacks on Redis memory (issue 15, item 4), against a REAL cluster: redis-server, three node
processes and nginx. Each test runs the attack first, then asserts what Redis keeps and that a
bystander on the attacked node keeps a round trip of a few milliseconds.

* Large messages into many rooms: each room's history is bounded by bytes, not only by count.
* Join/leave churn over fresh room names: a room that never had a message keeps its keys for the
  history ttl only.
* The shipped Redis has a memory bound and an eviction policy that keeps offsets consistent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from roomcast_dev.devcluster import REDIS_MAXMEMORY_POLICY, LocalCluster

from roomcast.broker.scripts import history_bytes_key, room_keys
from tests.support.pressure import (
    FEW_MS,
    burst,
    bystander_rtt,
    connect_from_new_address,
    round_trip_ms,
)
from tests.support.wsclient import Client, scaled

pytestmark = pytest.mark.integration

# Below the default (2 MiB, one client's legal burst of largest frames), so that one burst per
# room overflows it and the byte cap is what trims.
HISTORY_BYTES = 256 * 1024


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(3, node_env={"ROOMCAST_HISTORY_BYTES": str(HISTORY_BYTES)}) as running:
        yield running


@pytest.fixture
def db(cluster: LocalCluster) -> Iterator[redis.Redis]:
    client = redis.Redis(port=cluster.redis_port)
    try:
        yield client
    finally:
        client.close()


async def test_large_messages_keep_history_within_its_byte_budget(
    cluster: LocalCluster, db: redis.Redis
) -> None:
    before = int(db.info("memory")["used_memory"])
    rooms = [f"heavy-{n}" for n in range(12)]
    # The attack: each connection fills its own room with a burst of 60 KB messages.
    for room in rooms:
        await burst(cluster.url, room)
    grown = int(db.info("memory")["used_memory"]) - before
    rtt = await bystander_rtt(cluster.nodes[0], "heavy-bystander")
    print(f"\n12 rooms x 16 x 60 KB: Redis +{grown / 2**20:.1f} MiB, bystander {rtt:.1f} ms")
    for room in rooms:
        history = room_keys(room)[2]
        kept = db.lrange(history, 0, -1)
        assert 1 <= len(kept) < 16
        assert sum(map(len, kept)) <= HISTORY_BYTES
        held = db.get(history_bytes_key(room))
        assert isinstance(held, bytes) and int(held) == sum(map(len, kept))
    # Unbounded, the 12 rooms held 12 x 0.96 MB.
    assert grown < len(rooms) * (HISTORY_BYTES + 64 * 1024)
    assert rtt < scaled(FEW_MS)


async def test_newest_messages_kept_and_offsets_continue(
    cluster: LocalCluster, db: redis.Redis
) -> None:
    room = "heavy-then-light"
    last = await burst(cluster.url, room)
    client = await Client.connect(cluster.url)
    await client.join(room, "light")
    for n in range(3):
        await client.send(type="message", room=room, text=f"small {n}", id=f"s{n}")
        assert (await client.recv_type("ack", id=f"s{n}"))["offset"] == last + 1 + n
    await client.send(type="history", room=room)
    history = await client.recv_type("history", room=room)
    offsets = [m["offset"] for m in history["messages"]]
    # Newest kept, oldest trimmed, no gap inside what is kept.
    assert offsets == list(range(offsets[0], last + 4))
    assert offsets[0] > 1
    await client.close()


async def test_join_leave_churn_over_fresh_rooms_leaves_keys_for_a_minute_only(
    cluster: LocalCluster, db: redis.Redis
) -> None:
    baseline = set(db.keys("rc:{churn-*"))
    assert not baseline
    # The attack: join and leave fresh room names as fast as the frame limits allow
    # (a burst of 100 frames per connection), from several connections.
    started = time.monotonic()
    for c in range(12):  # 20 joins each: the default join burst of a connection
        churner = await connect_from_new_address(cluster.nodes[0].url)
        for n in range(20):
            room = f"churn-{c}-{n}"
            await churner.join(room, "churner")
            await churner.send(type="leave", room=room)
            await churner.recv_type("left", room=room)
        await churner.close()
    # The bystander's acks come through the same node's Redis pipeline: after the leaves.
    rtt = await bystander_rtt(cluster.nodes[0], "bystander-of-churn")
    left = db.keys("rc:{churn-*")
    held = sum(int(db.memory_usage(key) or 0) for key in left)
    print(
        f"\n240 fresh rooms joined and left: {len(left)} keys remain ({held} bytes), "
        f"bystander {rtt:.1f} ms"
    )
    # A room kept its counter, epoch and lineage only for a minute (KEPT_SILENT_EPOCH_SECONDS),
    # so that a member rejoining with ``since`` finds its epoch, and only while its client's
    # bucket of kept epochs had a token (40, then 5/s): nothing without an expiry, no presence
    # or history (an older node left a one-day epoch key per room behind).
    elapsed = time.monotonic() - started
    assert len(left) <= 3 * 12 * (40 + 1 + 5 * elapsed)
    names = [key.decode() if isinstance(key, bytes) else key for key in left]
    kinds = {name.rsplit(":", 1)[1] for name in names}
    assert kinds <= {"seq", "epoch", "line"}, left
    assert all(0 < db.ttl(key) <= 60 for key in left)
    assert rtt < scaled(FEW_MS)


async def test_silent_room_keys_live_no_longer_than_history(
    cluster: LocalCluster, db: redis.Redis
) -> None:
    client = await Client.connect(cluster.url)
    await client.join("silent-room", "quiet")
    seq, epoch, _, _ = room_keys("silent-room")
    # While a member is there, the room keeps its epoch, for at most the history ttl (600 s).
    assert 0 < db.ttl(epoch) <= 600 and 0 < db.ttl(seq) <= 600
    await client.send(type="message", room="silent-room", text="first", id="m")
    await client.recv_type("ack", id="m")
    assert db.ttl(epoch) > 600  # a room with messages keeps its offsets for a day
    await client.close()


def test_shipped_redis_has_a_memory_bound(cluster: LocalCluster, db: redis.Redis) -> None:
    config = db.config_get("maxmemory*")
    assert int(str(config["maxmemory"])) == 256 * 2**20
    assert config["maxmemory-policy"] == REDIS_MAXMEMORY_POLICY == "volatile-ttl"


async def test_full_redis_evicts_history_first_and_rooms_keep_working(
    cluster: LocalCluster, db: redis.Redis
) -> None:
    # A Redis at its bound: old histories go first (volatile-ttl), nothing is refused.
    used = int(db.info("memory")["used_memory"])
    db.config_set("maxmemory", used + 2**20)
    try:
        for n in range(12):
            await burst(cluster.url, f"flood-{n}")
        evicted = int(db.info("stats")["evicted_keys"])
        assert evicted > 0
        client = await Client.connect(cluster.url)
        joined = await client.join("after-flood", "survivor")
        await client.send(type="message", room="after-flood", text="still here", id="ok")
        ack = await client.recv_type("ack", id="ok")
        assert ack["offset"] == joined["offset"] + 1
        await client.send(type="presence", room="after-flood")
        presence = await client.recv_type("presence")
        survivor = {"username": "survivor", "connections": 1}
        assert presence["members"] == [{**survivor, "user_ids": {client.welcome["user_id"]: 1}}]
        # Wherever a counter or epoch went, its room starts a new epoch: offsets never repeat.
        for n in range(12):
            seq, epoch, history, _ = room_keys(f"flood-{n}")
            if db.exists(history):
                assert db.exists(seq) and db.exists(epoch)
        rtt = await round_trip_ms(client, "after-flood")
        print(f"\nRedis at maxmemory: {evicted} keys evicted, bystander {rtt:.1f} ms")
        assert rtt < scaled(FEW_MS)
        await client.close()
    finally:
        db.config_set("maxmemory", 256 * 2**20)
