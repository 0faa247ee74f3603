"""Join/leave churn told apart by client: the pure rule (core.churn) and its notices (bigroom)."""

from __future__ import annotations

from roomcast.core.bigroom import BigRooms, Step
from roomcast.core.churn import (
    CHURN_BURST,
    CHURN_RATE,
    CLIENTS_PER_ROOM,
    PACE_BURST,
    PACE_RATE,
    ROOM_CHURN_BURST,
    ROOM_CHURN_RATE,
    ROOM_CHURN_RESERVE,
    UNTOLD,
    RoomChurn,
    cause_of,
)

CHURNER = cause_of("ip:192.0.2.7")
BOB = cause_of("sub:bob")


def churn(room: RoomChurn, cause: str, events: int, start: float, spacing: float) -> list[bool]:
    return [room.coalesced(cause, start + i * spacing) for i in range(events)]


def named_then_coalesced(told: list[bool], burst: int) -> int:
    """How many came first named (the burst, and what refilled meanwhile); all after coalesced."""
    named = told.index(True)
    assert burst <= named <= burst + 3, named
    assert all(told[named:])
    return named


def test_a_churning_client_is_coalesced_and_the_others_are_still_named() -> None:
    room = RoomChurn()
    named_then_coalesced(churn(room, CHURNER, 1000, 0.0, 0.002), CHURN_BURST)  # 500/s, 2 s
    assert room.churning
    # Right after (and meanwhile): another client is named, the churner still coalesced.
    assert room.coalesced(BOB, 2.0) is False
    assert room.coalesced(CHURNER, 2.0) is True


def test_one_client_under_the_rate_is_never_coalesced() -> None:
    room = RoomChurn()
    assert not any(churn(room, CHURNER, 10 * CHURN_BURST, 0.0, 1.0 / CHURN_RATE))


def test_several_churning_clients_coalesce_the_room_but_a_newcomer() -> None:
    """The room's own bucket, spent by the events still named: clients each within their burst
    together past it have the room coalesced, down to the reserve a newcomer still takes."""
    room = RoomChurn()
    clients = [cause_of(f"ip:198.51.100.{i}") for i in range(4)]
    told = [room.coalesced(clients[i % 4], i * 0.0001) for i in range(4 * CHURN_BURST)]
    named_then_coalesced(told, ROOM_CHURN_BURST - ROOM_CHURN_RESERVE)
    assert room.coalesced(BOB, 0.5) is False
    assert room.coalesced(clients[0], 0.5) is True


def test_clients_under_their_own_rate_together_do_not_hide_a_newcomer() -> None:
    """Red team 12: three addresses, each a burst under its own (90 events) and then 9 a second,
    kept the room-wide bucket empty and every newcomer coalesced. Past their pace they leave the
    reserve: a newcomer is named all along, and the named events stay within the room's bucket."""
    room = RoomChurn()
    clients = [cause_of(f"ip:203.0.113.{i}") for i in range(3)]
    named = 0
    for i in range(3 * 90):
        named += not room.coalesced(clients[i % 3], i * 0.001)
    for step in range(270):  # 10 s, 27 events a second
        now = 0.3 + step / 27
        named += not room.coalesced(clients[step % 3], now)
        if step % 27 == 13:
            assert room.coalesced(cause_of(f"sub:newcomer{step}"), now) is False
            named += 1
    assert named <= ROOM_CHURN_BURST + ROOM_CHURN_RATE * 10.3 + 1


def test_many_light_clients_still_fill_the_reserve() -> None:
    """The reserve is bounded too: light clients enough to spend the room's rate (21 at a
    person's pace) have everybody coalesced, as several churners had before."""
    room = RoomChurn()
    clients = [cause_of(f"ip:192.0.2.{i}") for i in range(25)]
    for step in range(25 * PACE_BURST):  # each its pace's burst at once: the room emptied
        room.coalesced(clients[step % 25], 0.0)
    for step in range(25 * 5):  # then one event a second each, for 5 s
        room.coalesced(clients[step % 25], 1.0 + step * 0.04)
    assert room.coalesced(BOB, 6.0) is True


def test_the_churn_ends_once_every_bucket_refilled() -> None:
    room = RoomChurn()
    churn(room, CHURNER, 300, 0.0, 0.001)
    assert not room.settle(1.0)
    quiet = 0.3 + CHURN_BURST / CHURN_RATE + 0.01
    assert room.settle(quiet)
    assert room.coalesced(CHURNER, quiet) is False  # a new burst
    forgotten = quiet + PACE_BURST / PACE_RATE + 0.01  # the pace full again too
    assert room.settle(forgotten)
    assert room.clients == 0


def test_the_clients_a_room_keeps_are_bounded() -> None:
    """A churner with endless addresses or subjects: past CLIENTS_PER_ROOM the newcomers share
    one bucket (UNTOLD's), the room keeps at most CLIENTS_PER_ROOM + 1."""
    room = RoomChurn()
    for i in range(10_000):  # at once
        room.coalesced(cause_of(f"ip:10.0.{i // 256}.{i % 256}"), 0.0)
        assert room.clients <= CLIENTS_PER_ROOM + 1
    assert room.clients == CLIENTS_PER_ROOM + 1
    for i in range(10_000):  # over 10 s: the first are forgotten once full again
        room.coalesced(cause_of(f"ip:10.1.{i // 256}.{i % 256}"), 1.0 + i * 0.001)
        assert room.clients <= CLIENTS_PER_ROOM + 1


def test_untold_events_share_one_bucket() -> None:
    """A dead node's members reaped by Redis (no client known): one client, as before."""
    room = RoomChurn()
    told = churn(room, UNTOLD, CHURN_BURST + 1, 0.0, 0.0)
    assert told == [False] * CHURN_BURST + [True]


def test_the_cause_is_opaque_and_the_same_everywhere() -> None:
    assert cause_of("sub:alice@example.com") == cause_of("sub:alice@example.com")
    assert cause_of("sub:alice@example.com") != cause_of("sub:bob@example.com")
    key = cause_of("ip:192.0.2.7")
    assert "192" not in key and len(key) == 16
    assert key.isascii() and "\x1f" not in key


def test_bob_joining_while_a_client_churns_is_named() -> None:
    """Red team 10: one address's churn made the whole room presence_changed counts."""
    rooms = BigRooms(threshold=500, interval=1.0)
    steps = [rooms.note("r", i % 2 == 0, i * 0.003, CHURNER) for i in range(600)]
    named_then_coalesced([not step.deliver for step in steps], CHURN_BURST)
    notices = [step.notice for step in steps if step.notice is not None]
    assert notices and all(notice.big for notice in notices)
    assert rooms.note("r", True, 1.9, BOB) == Step(deliver=True)
    assert not rooms.note("r", False, 1.9, CHURNER).deliver


def test_per_member_events_resume_with_a_notice_once_the_churner_stopped() -> None:
    rooms = BigRooms(threshold=500, interval=1.0)
    steps = [rooms.note("r", i % 2 == 0, 0.0, CHURNER) for i in range(CHURN_BURST + 50)]
    first = steps[CHURN_BURST].notice  # the first coalesced one: told at once
    assert first is not None and first.big and first.joined + first.left == 1
    later = CHURN_BURST / CHURN_RATE + 0.01
    resumed = rooms.note("r", True, later, BOB)
    assert resumed.deliver
    # The 49 held (their timer's notice never came in this test) told with the resumption.
    assert resumed.notice is not None and not resumed.notice.big
    assert resumed.notice.joined + resumed.notice.left == 49
    assert rooms.note("r", False, later + 0.1, CHURNER) == Step(deliver=True)
