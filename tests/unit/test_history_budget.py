"""The clients' history budget: reserve, settle, and one request at a time learning a room."""

from __future__ import annotations

import asyncio

from roomcast.core.history_budget import HISTORY_REQUEST_BYTES, HistoryBudget

MIB = 1024 * 1024
PAGE = 64 * 1024


def budget() -> HistoryBudget:
    return HistoryBudget(4 * MIB, 8 * MIB, 2 * MIB, PAGE)


async def test_a_room_not_asked_yet_is_learned_by_one_request_while_the_others_wait() -> None:
    history = budget()
    bucket = history.acquire("ip:192.0.2.1")
    first = await history.reserve(bucket, "lobby")
    assert first == PAGE + HISTORY_REQUEST_BYTES
    waiting = asyncio.ensure_future(history.reserve(bucket, "lobby"))
    await asyncio.sleep(0)
    assert not waiting.done()  # its size is not known yet
    history.settle("ip:192.0.2.1", bucket, "lobby", first, 2 * MIB)
    # Then it reserves what the answer held: the client owes the first answer's 2 MiB too.
    assert await waiting == 2 * MIB + HISTORY_REQUEST_BYTES


async def test_requests_sent_together_stop_at_the_burst_once_the_size_is_known() -> None:
    history = budget()
    bucket = history.acquire("ip:192.0.2.1")
    reserved = await history.reserve(bucket, "big")
    assert reserved is not None
    history.settle("ip:192.0.2.1", bucket, "big", reserved, 2 * MIB)
    answers = [await history.reserve(bucket, "big") for _ in range(10)]
    admitted = [a for a in answers if a is not None]
    assert 2 <= len(admitted) <= 3  # 8 MiB less the first answer, 2 MiB each


async def test_small_answers_get_their_reserve_back_and_a_cancel_lets_others_learn() -> None:
    history = budget()
    bucket = history.acquire("ip:192.0.2.1")
    for room in (f"room-{index}" for index in range(100)):
        reserved = await history.reserve(bucket, room)
        assert reserved is not None, room
        history.settle("ip:192.0.2.1", bucket, room, reserved, 2_000)
    reserved = await history.reserve(bucket, "gone")
    assert reserved is not None
    waiting = asyncio.ensure_future(history.reserve(bucket, "gone"))
    await asyncio.sleep(0)
    history.cancel(bucket, "gone", reserved)
    assert await waiting == PAGE + HISTORY_REQUEST_BYTES


def test_a_connection_rejoining_all_its_rooms_with_since_recovers_every_one() -> None:
    """A client back after a disconnect rejoins each of its rooms (16 at most) with `since`, all
    at once, often on a node that never answered those rooms: its catch-ups must all fit the
    burst. Each reserving a whole history (2 MiB of the 8 MiB burst) got the fifth room onwards
    `overloaded`, so a user in six rooms lost its recovery on every reconnect."""
    history = HistoryBudget(4 * MIB, 8 * MIB, 2 * MIB, PAGE, max_rooms=16)
    bucket = history.acquire("user:alice")
    reserves = [history.reserve_catch_up(bucket, f"room-{index}") for index in range(16)]
    assert None not in reserves
    # What they really read is charged: two whole histories put the client in debt, and the
    # next catch-up (an attacker rejoining again at once) is refused.
    for index, reserved in enumerate(reserves):
        assert reserved is not None
        history.settle("user:alice", bucket, f"room-{index}", reserved, 2 * MIB, remember=False)
    assert history.reserve_catch_up(bucket, "room-0") is None


async def test_an_answer_cut_short_by_its_limit_is_not_the_rooms_size() -> None:
    """A `limit: 1` answer (~1 KiB) remembered as the room's size let every full request sent
    right after it reserve ~1 KiB: all passed, each charged 2 MiB, the client owing one burst."""
    history = budget()
    bucket = history.acquire("ip:192.0.2.1")
    full = await history.reserve(bucket, "big")
    assert full is not None
    history.settle("ip:192.0.2.1", bucket, "big", full, 2 * MIB)
    bucket.refund(8 * MIB)
    one = await history.reserve(bucket, "big")
    assert one == 2 * MIB + HISTORY_REQUEST_BYTES
    history.settle("ip:192.0.2.1", bucket, "big", one, 300, whole=False)
    assert await history.reserve(bucket, "big") == 2 * MIB + HISTORY_REQUEST_BYTES


async def test_a_limited_answer_still_lets_the_requests_waiting_for_the_room_go() -> None:
    history = budget()
    bucket = history.acquire("ip:192.0.2.1")
    first = await history.reserve(bucket, "lobby")
    assert first is not None
    waiting = asyncio.ensure_future(history.reserve(bucket, "lobby"))
    await asyncio.sleep(0)
    history.settle("ip:192.0.2.1", bucket, "lobby", first, 300, whole=False)
    # The size is still unknown: the next one learns it on a page's reserve.
    assert await waiting == PAGE + HISTORY_REQUEST_BYTES


async def test_one_clients_requests_for_a_room_are_read_one_after_the_other() -> None:
    """A room remembered empty, then filled: requests sent together each reserve what the one
    before found, not all the stale ~1 KiB; another client and another room do not wait."""
    history = budget()
    alice = history.acquire("ip:192.0.2.1")
    first = await history.reserve(alice, "filled", "ip:192.0.2.1")
    assert first is not None
    history.settle("ip:192.0.2.1", alice, "filled", first, 0)  # empty when asked
    small = await history.reserve(alice, "filled", "ip:192.0.2.1")
    assert small == HISTORY_REQUEST_BYTES
    second = asyncio.ensure_future(history.reserve(alice, "filled", "ip:192.0.2.1"))
    await asyncio.sleep(0)
    assert not second.done()
    bob = history.acquire("ip:192.0.2.2")
    assert await history.reserve(bob, "filled", "ip:192.0.2.2") == HISTORY_REQUEST_BYTES
    assert await history.reserve(alice, "other", "ip:192.0.2.1") is not None
    history.settle("ip:192.0.2.1", alice, "filled", small, 2 * MIB)  # filled since
    assert await second == 2 * MIB + HISTORY_REQUEST_BYTES


async def test_a_cancelled_read_lets_the_clients_next_request_go() -> None:
    history = budget()
    bucket = history.acquire("ip:192.0.2.1")
    first = await history.reserve(bucket, "lobby", "ip:192.0.2.1")
    assert first is not None
    waiting = asyncio.ensure_future(history.reserve(bucket, "lobby", "ip:192.0.2.1"))
    await asyncio.sleep(0)
    history.cancel(bucket, "lobby", first, "ip:192.0.2.1")
    assert await asyncio.wait_for(waiting, 1) == PAGE + HISTORY_REQUEST_BYTES
