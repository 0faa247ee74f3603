"""The cluster-wide buckets in a REAL redis-server: the room's bucket inside the publish script,
and the client charge script, driven through the Redis broker as nodes use them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster

from roomcast.broker import BrokerUnavailable, RoomRateLimited, scripts
from roomcast.broker.redis import RedisBroker
from roomcast.wire import envelope, protocol
from tests.support.wsclient import scaled

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with LocalCluster(0, nginx=False) as cluster:
        assert cluster.redis_url is not None
        yield cluster.redis_url


async def started(url: str, rate: tuple[float, int]) -> RedisBroker:
    up = asyncio.Event()

    def on_state(ready: bool) -> None:
        if ready:
            up.set()

    broker = RedisBroker(url, lambda room, payload: None, on_state, room_message_rate=rate)
    await broker.start()
    await asyncio.wait_for(up.wait(), scaled(10))
    return broker


@pytest.fixture
async def two_nodes(redis_url: str) -> AsyncIterator[tuple[RedisBroker, RedisBroker]]:
    # Slow refill: nothing refills during the test.
    brokers = (await started(redis_url, (0.01, 5)), await started(redis_url, (0.01, 5)))
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

        broker.charge("msg:sub:ann", cost, 0.01, 5, 1, record)
        await asyncio.wait_for(done.wait(), scaled(5))
    assert levels[0] == pytest.approx(2, abs=0.01)
    assert levels[1] == pytest.approx(1, abs=0.01)
    assert levels[2] == -1  # charged whatever the level, but owing one token at most
