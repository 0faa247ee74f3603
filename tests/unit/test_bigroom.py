"""Big rooms: the coalescing of presence events and the paging of presence, without I/O."""

from __future__ import annotations

import asyncio
import itertools

import orjson
import pytest

from roomcast.broker import BrokerUnavailable, RoomPresence
from roomcast.core.bigroom import BigRooms, Notice, Step
from roomcast.core.churn import CHURN_BURST, CHURN_RATE
from roomcast.core.presence_pages import (
    DEFAULT_PAGE,
    PresencePages,
    answer,
    page_of,
    take_snapshot,
)
from roomcast.wire import protocol
from roomcast.wire.protocol import ProtocolError


def test_below_the_threshold_every_event_is_delivered_as_before() -> None:
    rooms = BigRooms(threshold=20, interval=1.0)
    steps = [rooms.note("r", joined=True, now=0.0) for _ in range(19)]
    assert all(step == Step(deliver=True) for step in steps)
    assert not rooms.is_big("r")
    assert rooms.size("r") == 19


def test_off_when_the_threshold_is_zero() -> None:
    rooms = BigRooms(threshold=0, interval=1.0)
    assert rooms.counted("r", 10**6, None, 0.0) is None
    assert all(rooms.note("r", True, 0.0).deliver for _ in range(1000))
    assert not rooms.is_big("r")


def test_a_storm_above_the_threshold_is_one_notice_per_interval() -> None:
    rooms = BigRooms(threshold=20, interval=1.0)
    rooms.counted("r", 20, None, now=0.0)
    assert rooms.is_big("r")
    # The first join after a quiet interval is told at once.
    first = rooms.note("r", True, now=0.0)
    assert first == Step(deliver=False, notice=Notice("r", 1, 0, 21, big=True))
    # The next ones wait for the interval: one timer, then nothing more to schedule.
    second = rooms.note("r", True, now=0.1)
    assert not second.deliver and second.notice is None
    assert second.flush_in == pytest.approx(0.9)
    held = [rooms.note("r", joined=i % 3 != 0, now=0.2 + i / 1000) for i in range(300)]
    assert all(step == Step(deliver=False) for step in held)
    notice = rooms.flush("r", now=1.0)
    assert notice == Notice("r", joined=1 + 200, left=100, connections=21 + 1 + 200 - 100, big=True)
    # Nothing happened since: the timer finds nothing to tell.
    assert rooms.note("r", True, now=1.5).flush_in == pytest.approx(0.5)
    assert rooms.flush("r", now=2.0) == Notice("r", 1, 0, 123, big=True)
    assert rooms.flush("r", now=3.0) is None


def test_notices_never_come_closer_than_the_interval() -> None:
    rooms = BigRooms(threshold=5, interval=1.0)
    rooms.counted("r", 10, None, 0.0)
    sent_at = []
    timer_at: float | None = None
    now = 0.0
    while now < 10.0:
        if timer_at is not None and now >= timer_at:
            if rooms.flush("r", now) is not None:
                sent_at.append(now)
            timer_at = None
        step = rooms.note("r", True, now)
        if step.notice is not None:
            sent_at.append(now)
        if step.flush_in is not None:
            timer_at = now + step.flush_in
        now += 0.01
    assert len(sent_at) <= 11
    assert all(b - a >= 1.0 - 1e-9 for a, b in itertools.pairwise(sent_at))


def test_a_big_room_is_small_again_below_ninety_percent_with_a_last_notice() -> None:
    rooms = BigRooms(threshold=20, interval=1.0)
    rooms.counted("r", 25, None, 0.0)
    rooms.note("r", False, 0.0)  # told at once (24)
    steps = [rooms.note("r", False, 0.1 + i / 100) for i in range(5)]  # 23 .. 19: still big
    assert not any(step.deliver for step in steps)
    assert rooms.is_big("r")
    # 17 < 18 = 90 % of 20: small again, the pending counts go in the notice that says so, and
    # this leave (not among them) is delivered after it.
    rooms.note("r", False, 0.2)
    step = rooms.note("r", False, 0.3)
    assert step.deliver
    assert step.notice == Notice("r", joined=0, left=6, connections=17, big=False)
    assert not rooms.is_big("r")
    assert rooms.flush("r", 1.0) is None  # the timer of the big room's counts finds nothing
    assert rooms.note("r", True, 1.1) == Step(deliver=True)


def test_the_exact_count_of_a_join_reply_resets_the_count() -> None:
    rooms = BigRooms(threshold=20, interval=1.0)
    for _ in range(5):
        rooms.note("r", True, 0.0)
    assert rooms.counted("r", 30, None, 0.0) is None
    assert rooms.is_big("r") and rooms.size("r") == 30
    assert rooms.counted("r", 3, None, 0.5) == Notice("r", 0, 0, 3, big=False)
    rooms.forget("r")
    assert rooms.size("r") is None
    assert rooms.flush("r", 2.0) is None


def test_counts_never_go_negative() -> None:
    rooms = BigRooms(threshold=20, interval=1.0)
    for _ in range(3):
        assert rooms.note("r", False, 0.0).deliver
    assert rooms.size("r") == 0


def _presence(n: int) -> RoomPresence:
    """n names, each with 1-3 connections of one user (the last of every 7 not known)."""
    return {f"user{i:05d}": [None if i % 7 == 6 else f"id{i:05d}"] * (1 + i % 3) for i in range(n)}


def test_pages_cover_every_name_exactly_once_in_order() -> None:
    presence = _presence(1234)
    snap = take_snapshot(presence, 0.0)
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        page = page_of(snap, after, 100)
        assert len(page.members) <= 100
        assert page.total_members == 1234
        assert page.total_connections == sum(len(ids) for ids in presence.values())
        seen.extend(page.members)
        assert all(presence[name] == ids for name, ids in page.members.items())
        pages += 1
        after = page.next
        if after is None:
            break
    assert seen == sorted(presence)
    assert pages == 13


def test_a_cursor_stays_exact_when_the_room_changes_between_pages() -> None:
    first = take_snapshot({name: ["id"] for name in ("ann", "bob", "cid", "dan")}, 0.0)
    page = page_of(first, None, 2)
    assert list(page.members) == ["ann", "bob"] and page.next == "bob"
    # bob left, ben and eve came: the next page starts after "bob" all the same.
    second = take_snapshot({name: ["id"] for name in ("ann", "ben", "cid", "dan", "eve")}, 1.0)
    rest = page_of(second, page.next, 10)
    assert list(rest.members) == ["cid", "dan", "eve"] and rest.next is None


def test_the_answer_is_the_old_one_for_a_small_room_asked_without_paging() -> None:
    presence: RoomPresence = {"bob": ["b1", "b2"], "ann": ["a"]}
    snap = take_snapshot(presence, 0.0)
    assert answer(snap, False, "r", None, None, 7) == protocol.presence("r", presence, 7)
    paged = orjson.loads(answer(snap, False, "r", 1, None))
    assert paged == {
        "type": "presence",
        "room": "r",
        "members": [{"username": "ann", "connections": 1, "user_ids": {"a": 1}}],
        "total_members": 2,
        "total_connections": 3,
        "next": "ann",
    }
    big = orjson.loads(answer(take_snapshot(_presence(500), 0.0), True, "r", None, None))
    assert len(big["members"]) == DEFAULT_PAGE and big["next"] == "user00099"


def test_page_requests_are_validated() -> None:
    assert protocol.presence_page_request(None, None) == (None, None)
    assert protocol.presence_page_request(1000, "bob") == (1000, "bob")
    for limit in (0, 1001, True, 2.5, "10"):
        with pytest.raises(ProtocolError) as info:
            protocol.presence_page_request(limit, None, "r")
        assert info.value.code == "invalid_limit"
    for after in (5, "x" * 257, ["a"]):
        with pytest.raises(ProtocolError) as info:
            protocol.presence_page_request(None, after, "r")
        assert info.value.code == "invalid_frame"
    command = protocol.parse_command('{"type":"presence","room":"r","limit":5,"after":"bob"}')
    assert command == protocol.Presence("r", None, 5, "bob")


class CountingReader:
    def __init__(self, presence: RoomPresence) -> None:
        self.presence = presence
        self.reads = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, room: str) -> RoomPresence:
        self.reads += 1
        await self.gate.wait()
        return dict(self.presence)


async def test_a_big_room_is_read_once_per_interval_and_concurrent_askers_share_it() -> None:
    now = [0.0]
    reader = CountingReader(_presence(50))
    pages = PresencePages(reader, lambda: now[0], max_age=1.0, keep_from=20)
    reader.gate.clear()
    asks = [asyncio.ensure_future(pages.snapshot("r")) for _ in range(10)]
    await asyncio.sleep(0)
    reader.gate.set()
    snaps = await asyncio.gather(*asks)
    assert reader.reads == 1 and all(s is snaps[0] for s in snaps)
    now[0] = 0.9
    await pages.snapshot("r")
    assert reader.reads == 1
    now[0] = 1.0
    await pages.snapshot("r")
    assert reader.reads == 2


async def test_a_small_room_is_read_afresh_each_time() -> None:
    reader = CountingReader(_presence(5))
    pages = PresencePages(reader, lambda: 0.0, max_age=1.0, keep_from=20)
    for _ in range(3):
        snap = await pages.snapshot("r")
        assert not pages.is_big(snap)
    assert reader.reads == 3
    off = PresencePages(reader, lambda: 0.0, max_age=1.0, keep_from=0)
    assert not off.is_big(await off.snapshot("r"))


async def test_a_failed_read_fails_its_askers_and_is_not_kept() -> None:
    calls = 0

    async def failing(room: str) -> RoomPresence:
        nonlocal calls
        calls += 1
        raise RuntimeError("down")

    pages = PresencePages(failing, lambda: 0.0, max_age=1.0, keep_from=1)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            await pages.snapshot("r")
    assert calls == 2


def test_a_join_reply_counts_what_the_channel_showed_after_its_own_user_joined() -> None:
    """Redis counted the room at the join's own user_joined (its marker); joins and leaves seen
    after the marker and before the reply are not in that count, and must not be lost."""
    rooms = BigRooms(threshold=20, interval=1.0)
    rooms.note("r", True, 0.0)  # the joiner's own user_joined: its marker
    mark = rooms.mark("r")
    for _ in range(7):
        rooms.note("r", True, 0.1)  # others, after the marker, before the reply
    rooms.note("r", False, 0.1)
    rooms.counted("r", 50, mark, 0.2)  # Redis: 50 at the marker
    assert rooms.size("r") == 50 + 7 - 1
    # A mark from before the node forgot the room counts nothing after it.
    rooms.forget("r")
    rooms.note("r", True, 0.3)
    rooms.counted("r", 40, mark, 0.4)
    assert rooms.size("r") == 40


async def test_askers_sharing_a_cancelled_read_get_an_error_they_can_report() -> None:
    reader = CountingReader(_presence(50))
    pages = PresencePages(reader, lambda: 0.0, max_age=1.0, keep_from=20)
    reader.gate.clear()
    first = asyncio.ensure_future(pages.snapshot("r"))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(pages.snapshot("r"))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    with pytest.raises(BrokerUnavailable):
        await second
    reader.gate.set()
    assert len((await pages.snapshot("r")).names) == 50


async def test_expired_snapshots_are_dropped_when_another_is_kept() -> None:
    now = [0.0]
    pages = PresencePages(CountingReader(_presence(30)), lambda: now[0], 1.0, keep_from=20)
    await pages.snapshot("a")
    now[0] = 5.0
    await pages.snapshot("b")
    assert list(pages._snapshots) == ["b"]


def test_notices_of_a_very_big_room_are_spaced_by_its_size() -> None:
    """A notice costs a frame per member: 20,000 members get one every 4 s at most."""
    rooms = BigRooms(threshold=500, interval=1.0)
    assert rooms.spacing(600) == 1.0
    assert rooms.spacing(20_000) == pytest.approx(4.0)
    rooms.counted("r", 20_000, None, 0.0)
    assert rooms.note("r", True, 0.0).notice is not None
    assert rooms.note("r", True, 1.0).flush_in == pytest.approx(3.0, abs=0.01)


def test_a_small_room_that_churns_is_coalesced_after_its_burst() -> None:
    """Reconnect churn (open, join, close, again) from one client: each cycle was a frame to
    every member; past the burst the events of any room are coalesced like a big room's."""
    rooms = BigRooms(threshold=500, interval=1.0)
    steps = [rooms.note("r", joined=i % 2 == 0, now=0.0) for i in range(CHURN_BURST)]
    assert all(step == Step(deliver=True) for step in steps)
    churned = rooms.note("r", joined=True, now=0.0)
    assert not churned.deliver
    assert churned.notice is not None and churned.notice.big
    # A second of churn more: held, told at most once per interval, never per member.
    later = [rooms.note("r", joined=i % 2 == 1, now=i * 0.0099) for i in range(100)]
    assert not any(step.deliver for step in later)
    assert sum(step.notice is not None for step in later) == 0
    assert any(step.flush_in is not None for step in later)
    # Quiet until the burst has refilled: the next event is per member again, told first.
    quiet = 1.2 + CHURN_BURST / CHURN_RATE
    resumed = rooms.note("r", joined=True, now=quiet)
    assert resumed.deliver
    assert resumed.notice is not None and not resumed.notice.big
    assert rooms.note("r", joined=False, now=quiet + 0.1) == Step(deliver=True)


def test_joins_and_leaves_under_the_churn_rate_are_never_coalesced() -> None:
    rooms = BigRooms(threshold=500, interval=1.0)
    step_s = 1.0 / CHURN_RATE
    steps = [rooms.note("r", joined=i % 2 == 0, now=i * step_s) for i in range(10 * CHURN_BURST)]
    assert all(step == Step(deliver=True) for step in steps)


def test_a_big_room_that_shrinks_while_churning_stays_coalesced() -> None:
    rooms = BigRooms(threshold=20, interval=1.0)
    rooms.counted("r", 25, None, 0.0)
    for i in range(CHURN_BURST + 5):  # churn at one size: joins and leaves in turn
        rooms.note("r", joined=i % 2 == 0, now=0.5 + i * 0.001)
    # Below 90 % of the threshold, but still churning: no notice that it is small again.
    for i in range(10):
        step = rooms.note("r", joined=False, now=0.7 + i * 0.001)
        assert not step.deliver
        assert step.notice is None or step.notice.big
