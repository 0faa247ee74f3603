"""The rooms index (``GET /api/rooms``) in a REAL redis-server, driven through two Redis brokers
as two nodes use it: which joins write it, and that it still lists exactly the rooms with
members through joins, leaves and a failed write."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import redis

from roomcast.broker import scripts
from roomcast.broker.redis import RedisBroker
from roomcast.wire import envelope, protocol
from tests.support.brokers import started

pytestmark = pytest.mark.integration


@pytest.fixture
async def two_nodes(redis_url: str) -> AsyncIterator[tuple[RedisBroker, RedisBroker]]:
    brokers = (await started(redis_url), await started(redis_url))
    yield brokers
    for broker in brokers:
        await broker.stop()


def _announce(room: str, username: str, member: str) -> bytes:
    return envelope.pack(time.time(), protocol.user_joined(room, username, None), member)


async def _join(broker: RedisBroker, room: str, member: str) -> int:
    """Joins ``member``; returns the room's connections after it (the join script's count)."""
    await broker.subscribe(room)
    reply = await broker.join(room, member, member, None, _announce(room, member, member))
    assert reply.connections is not None
    return reply.connections


async def _listed(broker: RedisBroker) -> list[str]:
    # Read on the link the index writes went out on, after them: they ran before this read.
    page, _ = await broker.active_rooms(1000, None)
    return sorted(counts.room for counts in page)


async def _join_with_index_refused(broker: RedisBroker, room: str, url: str) -> None:
    """Member "a" joins the empty ``room``; the index is a string for a moment, so Redis
    refuses the join's index write (WRONGTYPE)."""
    plain = redis.Redis.from_url(url)
    plain.set(scripts.ROOMS_INDEX, b"in the way")
    try:
        assert await _join(broker, room, "a") == 1
        await broker.ban_of(room, "nobody")  # a read on the same link: the write was refused
    finally:
        plain.delete(scripts.ROOMS_INDEX)


def _stamp(url: str, room: str) -> int | None:
    """The join time the index keeps for ``room`` (µs, Redis's clock), None when unlisted."""
    stamp = redis.Redis.from_url(url).hget(scripts.ROOMS_JOINED, room)
    return None if stamp is None else int(stamp)


async def test_only_the_join_that_finds_a_room_empty_writes_the_index(
    two_nodes: tuple[RedisBroker, RedisBroker], redis_url: str
) -> None:
    first, second = two_nodes
    room = "index-writes"
    assert await _join(first, room, "a") == 1
    assert await _listed(first) == [room]
    stamp = _stamp(redis_url, room)
    assert stamp is not None
    # Two more joins into the occupied room, from both nodes: the index is not written again
    # (the stamp of the join that found the room empty stays).
    assert await _join(second, room, "b") == 2
    assert await _join(first, room, "c") == 3
    assert await _listed(first) == [room] and await _listed(second) == [room]
    assert _stamp(redis_url, room) == stamp
    # Listed while anyone is in it, taken out when its last member leaves.
    for broker, member in ((first, "a"), (second, "b")):
        broker.leave(room, member, _announce(room, member, member))
    assert await _listed(first) == [room]
    first.leave(room, "c", _announce(room, "c", "c"))
    assert await _listed(first) == []
    assert _stamp(redis_url, room) is None
    # The next join finds it empty again: listed, stamped after the leave that emptied it.
    assert await _join(second, room, "d") == 1
    assert await _listed(second) == [room]
    again = _stamp(redis_url, room)
    assert again is not None and again > stamp


async def test_a_failed_index_write_is_written_again_by_the_next_join_on_that_node(
    two_nodes: tuple[RedisBroker, RedisBroker], redis_url: str
) -> None:
    first, second = two_nodes
    room = "index-refused"
    await _join_with_index_refused(first, room, redis_url)
    assert await _listed(first) == []
    # A join into the occupied room on another node writes nothing; the next one on the node
    # whose write failed writes it.
    assert await _join(second, room, "b") == 2
    assert await _listed(second) == []
    assert await _join(first, room, "c") == 3
    assert await _listed(first) == [room]


async def test_a_failed_index_write_is_written_by_that_nodes_leave_while_others_stay(
    two_nodes: tuple[RedisBroker, RedisBroker], redis_url: str
) -> None:
    """The node whose write failed loses its last member there before it joins anyone else
    into the room: the room, still with members on the other node, was left unlisted until it
    emptied (no later join there finds it empty, none here comes)."""
    first, second = two_nodes
    room = "index-refused-then-left"
    await _join_with_index_refused(first, room, redis_url)
    assert await _join(second, room, "b") == 2
    first.leave(room, "a", _announce(room, "a", "a"))
    first.unsubscribe(room)  # its last member here: the node stops listening, as nodes do
    # A read on that link answered after the leave's (whose answer sends what it writes), and
    # one more after that write.
    for _ in range(2):
        await first.ban_of(room, "nobody")
    assert await _listed(second) == [room]
