"""roomcast.client without sockets: event parsing, backoff bounds, dedup and the send book."""

from __future__ import annotations

import asyncio
import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomcast.client import (
    Ack,
    Backoff,
    ChatMessage,
    Error,
    Gap,
    History,
    Joined,
    Left,
    Member,
    Presence,
    PresenceChanged,
    Resumed,
    RoomCursor,
    SendFailed,
    Typing,
    Unknown,
    UserJoined,
    UserLeft,
    Welcome,
    parse_event,
)
from roomcast.client.outgoing import Outgoing, SendBook, SendError, SendUnconfirmed
from roomcast.wire import protocol

# Parsing: the server's own encoders, so the client follows the protocol module.


def test_parses_every_server_event_built_by_the_protocol_module() -> None:
    message = protocol.complete_message(
        protocol.chat_message_prefix("r", "ann", "hé \"quoted\"", 1_700_000_000_000), 7, "ep"
    )  # fmt: skip
    cases = [
        (
            protocol.welcome("node-1", "c-1", 16, 65536, "id-a"),
            Welcome("node-1", "c-1", 16, 65536, "id-a"),
        ),
        (
            protocol.joined("r", "ann", "ep", 3, user_id="id-a"),
            Joined("r", "ann", "ep", 3, user_id="id-a"),
        ),
        (protocol.user_joined("r", "bob", "id-b"), UserJoined("r", "bob", "id-b")),
        (protocol.user_left("r", "bob", "id-b"), UserLeft("r", "bob", "id-b")),
        (protocol.typing("r", "bob", "id-b"), Typing("r", "bob", "id-b")),
        (
            protocol.complete_message(
                protocol.chat_message_prefix("r", "ann", "x", 1, None, "id-a"), 7, "ep"
            ),
            ChatMessage("r", "ann", "x", 1, 7, "ep", user_id="id-a"),
        ),
        (protocol.joined("r", "ann", "ep", 3), Joined("r", "ann", "ep", 3)),
        (
            protocol.joined("r", "ann", "ep", 3, False, "too_old"),
            Joined("r", "ann", "ep", 3, recovered=False, reason="too_old"),
        ),
        (protocol.left("r"), Left("r")),
        (protocol.user_joined("r", "bob"), UserJoined("r", "bob")),
        (protocol.user_left("r", "bob"), UserLeft("r", "bob")),
        (message, ChatMessage("r", "ann", 'hé "quoted"', 1_700_000_000_000, 7, "ep")),
        (protocol.typing("r", "bob"), Typing("r", "bob")),
        (
            protocol.presence("r", {"bob": ["b", None], "ann": ["a"]}),
            Presence("r", (Member("ann", 1, {"a": 1}), Member("bob", 2, {"b": 1}))),
        ),
        (
            protocol.history("r", "ep", 7, [message]),
            History("r", "ep", 7, (ChatMessage("r", "ann", 'hé "quoted"', 1_700_000_000_000, 7,
                                               "ep"),)),
        ),
        (
            protocol.presence_page("r", {"ann": ["a"]}, 2, 3, "ann"),
            Presence("r", (Member("ann", 1, {"a": 1}),), 2, 3, "ann"),
        ),
        (
            protocol.presence_changed("r", 5, 2, 700, True),
            PresenceChanged("r", 5, 2, 700, big=True),
        ),
        (
            protocol.joined("r", "ann", "ep", 3, connections=700),
            Joined("r", "ann", "ep", 3, big=True, connections=700),
        ),
        (protocol.error("not_joined", "join first", "r"), Error("not_joined", "join first", "r")),
        (protocol.error("invalid_json", "bad"), Error("invalid_json", "bad", None)),
    ]  # fmt: skip
    for raw, expected in cases:
        assert parse_event(raw) == expected
        assert parse_event(raw.decode()) == expected


def test_presence_members_carry_the_user_ids_of_namesakes() -> None:
    """A presence entry is matched to the user_joined a member saw by its user_id; a server of a
    release before ids sends none, and the entry is as it was."""
    joined = parse_event(protocol.user_joined("r", "alice", "id-2"))
    answer = parse_event(protocol.presence("r", {"alice": ["id-1", "id-2", "id-2", None]}))
    assert isinstance(joined, UserJoined) and isinstance(answer, Presence)
    [alice] = answer.members
    assert (alice.connections, dict(alice.user_ids)) == (4, {"id-1": 1, "id-2": 2})
    assert joined.user_id in alice.user_ids
    old = parse_event('{"type":"presence","room":"r","members":[{"username":"a","connections":2}]}')
    assert isinstance(old, Presence) and old.members == (Member("a", 2),)
    assert not old.members[0].user_ids
    assert len({alice, old.members[0]}) == 2  # still hashable


def test_join_of_a_room_already_joined_has_no_position() -> None:
    event = parse_event('{"type":"joined","room":"r","already":true}')
    assert event == Joined("r", already=True)


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("not json", ""),
        (b"\xff\xfe", ""),
        ("[1, 2]", ""),
        ("null", ""),
        ('{"no":"type"}', ""),
        ('{"type": 5}', ""),
        ('{"type":"reaction","room":"r","emoji":"+1"}', "reaction"),  # a newer server's event
        ('{"type":"message","room":"r","username":"a","text":"t","timestamp":1}', "message"),
        ('{"type":"message","room":"r","username":"a","text":7,"timestamp":1,'
         '"offset":1,"epoch":"e"}', "message"),
        ('{"type":"joined","room":"r","username":"a","epoch":"e","offset":true}', "joined"),
        ('{"type":"presence","room":"r","members":[{"username":"a"}]}', "presence"),
        ('{"type":"presence","room":"r","members":"everyone"}', "presence"),
        ('{"type":"presence","room":"r","members":[{"username":"a","connections":1,'
         '"user_ids":["x"]}]}', "presence"),
        ('{"type":"presence","room":"r","members":[{"username":"a","connections":1,'
         '"user_ids":{"x":"1"}}]}', "presence"),
        ('{"type":"history","room":"r","epoch":"e","offset":1,"messages":[1]}', "history"),
        ('{"type":"joined","room":"r","username":"a","epoch":"e","offset":1,"recovered":"yes"}',
         "joined"),
    ],
)  # fmt: skip
def test_odd_frames_become_unknown_events_with_their_raw_text(raw: str | bytes, kind: str) -> None:
    event = parse_event(raw)
    assert isinstance(event, Unknown)
    assert event.type == kind
    assert event.raw == (raw if isinstance(raw, str) else raw.decode("utf-8", "replace"))


def test_unknown_event_keeps_its_fields_read_only() -> None:
    event = parse_event('{"type":"reaction","room":"r","emoji":"+1"}')
    assert isinstance(event, Unknown)
    assert event.data["emoji"] == "+1"
    with pytest.raises(TypeError):
        event.data["emoji"] = "-1"  # type: ignore[index]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
event_types = st.sampled_from(
    ["welcome", "joined", "left", "user_joined", "user_left", "message", "typing", "presence",
     "presence_changed", "history", "error", "other"]
)  # fmt: skip


field_names = st.sampled_from(
    ["room", "username", "text", "timestamp", "offset", "epoch", "members", "messages", "code",
     "reason", "node", "connection", "recovered", "already", "joined", "left", "connections",
     "big", "next", "total_members"]
)  # fmt: skip


@given(event_types, st.dictionaries(field_names, json_values, max_size=8))
def test_parsing_never_raises_on_any_json_object(kind: str, fields: dict[str, object]) -> None:
    event = parse_event(json.dumps({**fields, "type": kind}))
    assert event is not None


@given(st.binary(max_size=200))
def test_parsing_never_raises_on_any_bytes(raw: bytes) -> None:
    assert parse_event(raw) is not None


# Backoff: full jitter under an exponential bound, capped.


def test_backoff_bounds_double_from_base_up_to_the_cap() -> None:
    backoff = Backoff(base=0.5, cap=10.0)
    assert [backoff.bound(n) for n in range(0, 8)] == [0.0, 0.5, 1, 2, 4, 8, 10, 10]
    assert backoff.bound(10_000) == 10.0  # no overflow on a client retrying for days


def test_backoff_delays_are_jittered_within_the_bound() -> None:
    backoff = Backoff(base=0.2, cap=3.0, rng=random.Random(7))
    for attempt in range(1, 12):
        delays = [backoff.delay(attempt) for _ in range(300)]
        bound = backoff.bound(attempt)
        assert all(0.0 <= d <= bound for d in delays)
        # Full jitter: spread over the whole window, not bunched at its end.
        assert min(delays) < bound * 0.1 and max(delays) > bound * 0.9


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="base"):
        Backoff(base=0.0)
    with pytest.raises(ValueError, match="base"):
        Backoff(base=5.0, cap=1.0)


# The cursor: dedup by offset, resume and gaps.


def msg(offset: int, epoch: str = "e1", text: str = "t", room: str = "r") -> ChatMessage:
    return ChatMessage(room, "ann", text, 0, offset, epoch)


def test_cursor_delivers_each_offset_once_and_drops_replays() -> None:
    cursor = RoomCursor("r")
    assert cursor.on_joined(Joined("r", "ann", "e1", 10)) is None
    assert cursor.since() == {"offset": 10, "epoch": "e1"}
    verdicts = [cursor.accept(msg(n))[0] for n in (9, 10, 11, 12, 11, 12, 13)]
    assert verdicts == [False, False, True, True, False, False, True]
    assert cursor.duplicates_dropped == 4
    assert cursor.since() == {"offset": 13, "epoch": "e1"}


def test_cursor_resume_keeps_position_and_reports_resumed() -> None:
    cursor = RoomCursor("r", "e1", 13)
    outcome = cursor.on_joined(Joined("r", "ann", "e1", 20, recovered=True))
    assert outcome == Resumed("r", "e1", 13)
    assert [cursor.accept(msg(n))[0] for n in range(12, 22)] == [False, False] + [True] * 8


@pytest.mark.parametrize("reason", ["epoch_changed", "too_old", "overloaded"])
def test_cursor_failed_resume_is_a_gap_and_moves_to_the_new_position(reason: str) -> None:
    cursor = RoomCursor("r", "e1", 13)
    epoch = "e2" if reason == "epoch_changed" else "e1"
    outcome = cursor.on_joined(Joined("r", "ann", epoch, 50, recovered=False, reason=reason))
    assert outcome == Gap("r", reason, epoch, 50)
    assert cursor.accept(msg(50, epoch)) == (False, None)
    assert cursor.accept(msg(51, epoch)) == (True, None)


def test_cursor_reports_an_epoch_change_on_a_live_connection_and_follows_it() -> None:
    cursor = RoomCursor("r", "e1", 40)
    assert cursor.accept(msg(1, "e2")) == (True, Gap("r", "epoch_changed", "e2", 1))
    assert cursor.accept(msg(2, "e2")) == (True, None)
    assert cursor.accept(msg(41, "e1"))[0] is True  # an old-epoch straggler: a change again


def test_cursor_reports_skipped_offsets_but_delivers() -> None:
    cursor = RoomCursor("r", "e1", 5)
    assert cursor.accept(msg(8)) == (True, Gap("r", "offsets_skipped", "e1", 5))
    assert cursor.offset == 8


def test_cursor_ignores_an_already_member_join() -> None:
    cursor = RoomCursor("r", "e1", 5)
    assert cursor.on_joined(Joined("r", already=True)) is None
    assert cursor.since() == {"offset": 5, "epoch": "e1"}


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=80))
def test_cursor_output_is_strictly_increasing_whatever_the_input(offsets: list[int]) -> None:
    cursor = RoomCursor("r", "e1", 0)
    delivered = [n for n in offsets if cursor.accept(msg(n))[0]]
    assert delivered == sorted(set(delivered))
    assert cursor.duplicates_dropped == len(offsets) - len(delivered)


# The send book: queue bounds, order, at-most-once writes.


async def test_send_book_keeps_order_bounds_the_queue_and_confirms_by_echo() -> None:
    book = SendBook(max_unsent=3, queue_timeout=60, confirm_timeout=60)
    handles = [Outgoing(i, "r", f"m{i}") for i in range(4)]
    assert [book.queue(h) for h in handles[:3]] == [None, None, None]
    overflow = book.queue(handles[3])
    assert overflow is not None and overflow.reason == "queue_full"
    taken = book.take_unsent("r")
    assert [h.text for h in taken] == ["m0", "m1", "m2"] and book.unsent_count == 0
    book.written(taken[0], link=1)
    book.put_back("r", taken[1:])  # the connection died before these were written
    assert [h.text for h in book.take_unsent("r")] == ["m1", "m2"]
    echo = msg(5, text="m0")
    assert book.confirm(echo, link=1) is None  # its ack has not come: the echo waits for it
    assert book.acknowledge(Ack(0, "r", echo.epoch, 5)) is taken[0]
    assert await taken[0].wait() == echo
    with pytest.raises(SendError, match="queue_full"):
        await handles[3].wait()


async def test_send_book_confirms_exactly_by_ack_not_by_text() -> None:
    book = SendBook(max_unsent=10, queue_timeout=60, confirm_timeout=60)
    first, second = Outgoing(1, "r", "same"), Outgoing(2, "r", "same")
    book.written(first, link=1)
    book.written(second, link=1)
    # Acks first this time: the second message got offset 7, the first offset 8.
    assert book.acknowledge(Ack(2, "r", "e", 7)) is None
    assert book.acknowledge(Ack(1, "r", "e", 8)) is None
    assert book.confirm(msg(8, text="same"), link=1) is first
    assert book.confirm(msg(7, text="same"), link=1) is second
    # The same user's other connection says the same thing: not ours, nothing confirmed.
    third = Outgoing(3, "r", "same")
    book.written(third, link=1)
    assert book.confirm(msg(9, text="same"), link=1) is None
    refused = book.refuse(Error("rate_limited", "slow down", "r", 3))
    assert refused is not None and refused.reason == "rate_limited"
    assert book.in_flight_count == 0
    with pytest.raises(SendError, match="rate_limited"):
        await third.wait()


async def test_an_unconfirmed_answer_is_a_distinct_failure_of_send() -> None:
    book = SendBook(max_unsent=10, queue_timeout=60, confirm_timeout=60)
    unsure, refused = Outgoing(1, "r", "maybe"), Outgoing(2, "r", "no")
    book.written(unsure, link=1)
    book.written(refused, link=1)
    book.refuse(Error("unconfirmed", "message may or may not have been sent", "r", 1))
    book.refuse(Error("unavailable", "message not delivered: broker unavailable", "r", 2))
    with pytest.raises(SendUnconfirmed, match="may or may not have been delivered"):
        await unsure.wait()
    with pytest.raises(SendError, match="unavailable") as refusal:
        await refused.wait()
    assert not isinstance(refusal.value, SendUnconfirmed)


async def test_send_book_matches_a_lost_connections_message_by_text_in_the_replay() -> None:
    book = SendBook(max_unsent=10, queue_timeout=60, confirm_timeout=60)
    lost = Outgoing(1, "r", "written before the drop")
    book.written(lost, link=1)  # its ack was lost with connection 1
    assert book.confirm(msg(4, text="written before the drop"), link=2) is lost


async def test_send_book_settles_old_in_flight_messages_as_unconfirmed() -> None:
    book = SendBook(max_unsent=10, queue_timeout=60, confirm_timeout=60)
    old, new = Outgoing(1, "r", "before"), Outgoing(2, "r", "after")
    book.written(old, link=1)
    book.written(new, link=2)
    failures = book.settle_before("r", link=2)
    assert [(f.text, f.reason) for f in failures] == [("before", "unconfirmed")]
    assert book.in_flight_count == 1


async def test_send_book_expires_by_age() -> None:
    book = SendBook(max_unsent=10, queue_timeout=5, confirm_timeout=8)
    queued, flying = Outgoing(1, "r", "q", queued_at=100.0), Outgoing(2, "r", "f")
    book.queue(queued)
    book.written(flying, link=1)
    written_at = flying.written_at
    assert written_at is not None
    assert book.expire(104.0) == []
    assert [f.reason for f in book.expire(105.0)] == ["expired"]
    assert [f.reason for f in book.expire(written_at + 8)] == ["unconfirmed"]
    assert book.unsent_count == 0 and book.in_flight_count == 0


async def test_outcome_futures_never_warn_when_nobody_awaits_them() -> None:
    handle = Outgoing(1, "r", "x")
    handle.fail("stopped")
    handle.resolve(msg(1))  # a late echo after a give-up changes nothing
    assert handle.outcome.result() == SendFailed("r", "x", "stopped", 1)
    await asyncio.sleep(0)


def test_acks_and_errors_with_ids_parse_from_the_servers_own_encoders() -> None:
    from roomcast.wire import protocol

    assert parse_event(protocol.ack("r", 7, "e1", 12)) == Ack(7, "r", "e1", 12)
    assert parse_event(protocol.error("unavailable", "down", "r", "m1")) == Error(
        "unavailable", "down", "r", "m1"
    )
    assert parse_event(protocol.error("invalid_json", "bad")) == Error("invalid_json", "bad")
    assert isinstance(parse_event('{"type":"ack","room":"r","epoch":"e","offset":1}'), Unknown)
