"""The cluster-wide buckets in a REAL redis-server: the room's bucket inside the publish script,
and the client charge script, driven through the Redis broker as nodes use them."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator

import pytest
import redis
from roomcast_dev.redis_topologies import RedisClusterTopology

from roomcast.broker import BrokerUnavailable, BucketCharge, RoomRateLimited, scripts
from roomcast.broker.cluster_slots import slot_of
from roomcast.broker.redis import RedisBroker
from roomcast.broker.redis_cluster import RedisClusterBroker
from roomcast.wire import envelope, protocol
from tests.support.brokers import started
from tests.support.wsclient import scaled

pytestmark = pytest.mark.integration

SLOW = (0.01, 5)  # a room's rate and burst that refills nothing during a test


@pytest.fixture
async def two_nodes(redis_url: str) -> AsyncIterator[tuple[RedisBroker, RedisBroker]]:
    brokers = (
        await started(redis_url, room_message_rate=SLOW),
        await started(redis_url, room_message_rate=SLOW),
    )
    yield brokers
    for broker in brokers:
        await broker.stop()


def prefix(room: str) -> bytes:
    return protocol.chat_message_prefix(room, "ann", "hi", 0)


async def test_the_room_bucket_holds_over_all_nodes(
    two_nodes: tuple[RedisBroker, RedisBroker], redis_url: str
) -> None:
    room = "shared-room"
    for broker in two_nodes:
        await broker.subscribe(room)
    posted = []
    for index in range(4):  # alternating nodes: 4 of the burst of 5
        posted.append(await two_nodes[index % 2].post_message(room, envelope.head(0), prefix(room)))
    assert [offset for _, offset in posted] == [1, 2, 3, 4]
    refused: asyncio.Future[BrokerUnavailable] = asyncio.get_running_loop().create_future()
    published: list[int] = []
    two_nodes[1].publish_message(
        room, envelope.head(0), prefix(room), None, lambda e, o: published.append(o)
    )
    two_nodes[1].publish_message(room, envelope.head(0), prefix(room), refused.set_result, None)
    error = await asyncio.wait_for(refused, scaled(5))
    assert published == [5]
    assert isinstance(error, RoomRateLimited)
    assert 0 < error.retry_after <= 100  # one token at 0.01/s
    with pytest.raises(RoomRateLimited):
        await two_nodes[0].post_message(room, envelope.head(0), prefix(room))
    # Refused messages took no offset and left no history; the bucket's key goes with the room
    # (it expires with the room's counter, never before: see scripts._ROOM_LIMIT).
    client = redis.Redis.from_url(redis_url)
    seq = scripts.room_keys(room)[0]
    assert client.get(seq) == b"5"
    assert client.llen(scripts.room_keys(room)[2]) == 5
    # The bucket lives at least as long as the room's offsets: read one after the other, the
    # two remaining times may differ by a millisecond tick of Redis' clock, not more.
    # One transaction: nothing runs between the two reads, however loaded the machine.
    both = client.pipeline(transaction=True)
    both.pttl(seq)
    both.pttl(scripts.room_rate_key(room))
    seq_left, bucket_left = both.execute()
    assert 0 < seq_left <= bucket_left + 2


async def test_a_client_charge_answers_the_shared_level_and_its_debt_is_bounded(
    two_nodes: tuple[RedisBroker, RedisBroker],
) -> None:
    levels: list[float] = []
    for broker, cost in ((two_nodes[0], 3), (two_nodes[1], 1), (two_nodes[0], 5)):
        done = asyncio.Event()

        def record(level: float, done: asyncio.Event = done) -> None:
            levels.append(level)
            done.set()

        broker.charge("sub:ann", [BucketCharge("msg", cost, 0.01, 5, 1, record)])
        await asyncio.wait_for(done.wait(), scaled(5))
    assert levels[0] == pytest.approx(2, abs=0.01)
    assert levels[1] == pytest.approx(1, abs=0.01)
    assert levels[2] == -1  # charged whatever the level, but owing one token at most


async def charge_both(
    broker: RedisBroker, owner: str, messages: int, kept: int
) -> dict[str, float]:
    """Charge a message's two buckets of ``owner`` in one call; the levels it answers."""
    levels: dict[str, float] = {}
    done = asyncio.Event()

    def record(kind: str, level: float) -> None:
        levels[kind] = level
        if len(levels) == 2:
            done.set()

    broker.charge(
        owner,
        [
            BucketCharge("msg", messages, 0.01, 5, 1, functools.partial(record, "msg")),
            BucketCharge("kept", kept, 0.01, 1000, 1000, functools.partial(record, "kept")),
        ],
    )
    await asyncio.wait_for(done.wait(), scaled(5))
    return levels


def check_levels(first: dict[str, float], second: dict[str, float]) -> None:
    assert first == pytest.approx({"msg": 3, "kept": 700}, abs=0.01)
    # Messages owe one token at most; the bytes kept owe up to their whole burst.
    assert second == pytest.approx({"msg": -1, "kept": -200}, abs=0.01)


async def test_one_charge_holds_an_owners_buckets_each_with_its_own_level_and_debt(
    two_nodes: tuple[RedisBroker, RedisBroker], redis_url: str
) -> None:
    """A message spends two buckets of its client (messages, bytes kept): one script charges
    both, each bucket keeps its own level and debt, and another owner's are not touched."""
    first = await charge_both(two_nodes[0], "sub:cat", 2, 300)
    second = await charge_both(two_nodes[1], "sub:cat", 4, 900)
    check_levels(first, second)
    keys = [scripts.client_rate_key("sub:cat", kind) for kind in ("msg", "kept")]
    # Both buckets in the owner's slot (one script on Redis Cluster), apart from others'.
    assert len({slot_of(key) for key in keys}) == 1
    assert slot_of(scripts.client_rate_key("sub:dog", "msg")) != slot_of(keys[0])
    client = redis.Redis.from_url(redis_url)
    try:
        assert all(client.exists(key) for key in keys)
        assert not client.exists(scripts.client_rate_key("sub:dog", "msg"))
    finally:
        client.close()


async def test_one_charge_of_two_buckets_runs_on_redis_cluster() -> None:
    """On Redis Cluster a script's keys must share a slot (else CROSSSLOT, and a charge that
    fails is forgotten: the shared limits would hold on no node but each one's own)."""
    with RedisClusterTopology(primaries=3, replicas=0) as topology:
        seeds = topology.node_env()["ROOMCAST_REDIS_URL"]
        nodes = [await started(seeds, RedisClusterBroker, room_message_rate=SLOW) for _ in range(2)]
        try:
            first = await charge_both(nodes[0], "ip:10.0.0.7", 2, 300)
            second = await charge_both(nodes[1], "ip:10.0.0.7", 4, 900)
        finally:
            for broker in nodes:
                await broker.stop()
    check_levels(first, second)
