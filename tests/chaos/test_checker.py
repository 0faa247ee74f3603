"""The checker on synthetic histories: it must pass a clean one and catch each planted fault
(a silent loss, a duplicate, a reorder, a refused message delivered, two texts at one offset),
and accept exactly the documented loss notices. No processes: fast, part of every test run."""

from __future__ import annotations

from tests.chaos.checker import Verdict, check
from tests.chaos.history import MemberLog
from tests.chaos.presence import diff

ROOM = "r"


def member(name: str) -> MemberLog:
    return MemberLog(name, ROOM, name)


def joined(log: MemberLog, t: float, epoch: str, offset: int, **extra: object) -> None:
    log.received(t, {"type": "joined", "room": ROOM, "epoch": epoch, "offset": offset} | extra)


def deliver(log: MemberLog, t: float, epoch: str, offset: int, text: str | None = None) -> None:
    event = {"type": "message", "room": ROOM, "epoch": epoch, "offset": offset}
    log.received(t, event | {"text": text or f"m{epoch}{offset}", "username": "s"})


def send(log: MemberLog, t: float, epoch: str, offset: int, text: str | None = None) -> None:
    """``log`` sends a message that is acknowledged at ``epoch:offset``."""
    text = text or f"m{epoch}{offset}"
    log.sent(t, {"type": "message", "room": ROOM, "text": text, "id": text})
    log.received(t + 0.01, {"type": "ack", "id": text, "room": ROOM, "epoch": epoch,
                            "offset": offset})  # fmt: skip


def room_with(offsets: list[int], epoch: str = "A") -> tuple[MemberLog, MemberLog]:
    """A sender and a reader, both joined at offset 0; the sender's messages are acked."""
    sender, reader = member("sender"), member("reader")
    joined(sender, 0.0, epoch, 0)
    joined(reader, 0.0, epoch, 0)
    for offset in offsets:
        send(sender, float(offset), epoch, offset)
        deliver(sender, offset + 0.02, epoch, offset)
    return sender, reader


def test_clean_history_passes_and_counts_every_delivery() -> None:
    sender, reader = room_with([1, 2, 3])
    for offset in (1, 2, 3):
        deliver(reader, offset + 0.03, "A", offset)
    verdict = check([sender, reader])
    assert verdict.ok, verdict.failures
    assert (verdict.acknowledged, verdict.owed, verdict.delivered) == (3, 6, 6)


def test_planted_silent_loss_is_missing() -> None:
    sender, reader = room_with([1, 2, 3])
    deliver(reader, 1.1, "A", 1)
    deliver(reader, 3.1, "A", 3)
    verdict = check([sender, reader])
    assert verdict.failures == {"missing": 1}
    assert [(m.member, m.offset, m.acked) for m in verdict.missing_list] == [("reader", 2, True)]


def test_planted_duplicate_and_reorder() -> None:
    sender, reader = room_with([1, 2, 3])
    for offset in (1, 3, 2, 3):
        deliver(reader, 4.0 + offset, "A", offset)
    verdict = check([sender, reader])
    assert verdict.failures == {"duplicates": 1, "out_of_order": 1}


def test_refused_message_delivered_is_caught() -> None:
    sender, reader = room_with([1])
    deliver(reader, 1.1, "A", 1)
    sender.sent(2.0, {"type": "message", "room": ROOM, "text": "nope", "id": "nope"})
    sender.received(2.1, {"type": "error", "id": "nope", "code": "unavailable", "room": ROOM})
    deliver(reader, 2.2, "A", 2, "nope")
    verdict = check([sender, reader])
    assert verdict.refused == 1
    assert verdict.failures["refused_delivered"] == 1


def test_an_unconfirmed_message_may_be_delivered_but_then_to_everyone() -> None:
    sender, reader = room_with([1])
    deliver(reader, 1.1, "A", 1)
    for text in ("maybe", "never"):
        sender.sent(2.0, {"type": "message", "room": ROOM, "text": text, "id": text})
        sender.received(2.1, {"type": "error", "id": text, "code": "unconfirmed", "room": ROOM})
    deliver(sender, 2.2, "A", 2, "maybe")  # published after all; "never" was not
    verdict = check([sender, reader])
    assert verdict.unconfirmed == 2 and verdict.refused == 0
    assert verdict.failures == {"missing_unacked": 1}  # the reader did not get "maybe"
    deliver(reader, 2.3, "A", 2, "maybe")
    assert check([sender, reader]).ok


def test_two_texts_at_one_offset_and_one_text_at_two_offsets() -> None:
    sender, reader = room_with([1])
    deliver(reader, 1.1, "A", 1, "something else")
    deliver(reader, 1.2, "A", 2, "mA1")
    verdict = check([sender, reader])
    assert verdict.text_conflicts == 1
    assert verdict.republished >= 1


def test_messages_before_the_first_join_are_not_owed() -> None:
    sender, reader = room_with([1, 2, 3])
    reader.entries.clear()
    joined(reader, 2.5, "A", 2)
    deliver(reader, 3.1, "A", 3)
    verdict = check([sender, reader])
    assert verdict.ok and verdict.owed == 4


def test_epoch_change_told_on_rejoin_excuses_what_it_replaced() -> None:
    sender, reader = room_with([1, 2])
    deliver(reader, 1.1, "A", 1)  # then the reader is away; Redis restarts empty (epoch B)
    for offset in (1, 2, 3):
        send(sender, 5.0 + offset, "B", offset)
        deliver(sender, 5.1 + offset, "B", offset)
    joined(reader, 9.0, "B", 2, recovered=False, reason="epoch_changed")
    deliver(reader, 9.1, "B", 3)
    verdict = check([sender, reader])
    assert verdict.ok, verdict.failures
    assert verdict.loss_notices == 1 and verdict.lost_with_notice == 3  # A:2, B:1, B:2


def test_epoch_change_crossed_silently_is_missing() -> None:
    sender, reader = room_with([1])
    deliver(reader, 1.1, "A", 1)
    for offset in (1, 2, 3):
        send(sender, 5.0 + offset, "B", offset)
        deliver(sender, 5.1 + offset, "B", offset)
    deliver(reader, 8.1, "B", 3)  # a member that stayed joined skips B's first two
    verdict = check([sender, reader])
    assert verdict.failures == {"missing": 2}


def test_explicit_loss_event_covers_its_range_only() -> None:
    sender, reader = room_with([1, 2, 3, 4])
    deliver(reader, 1.1, "A", 1)
    reader.received(3.5, {"type": "loss", "room": ROOM, "epoch": "A", "from": 2, "to": 3})
    verdict = check([sender, reader])
    assert verdict.lost_with_notice == 2
    assert verdict.failures == {"missing": 1}  # offset 4 was never announced lost


def test_an_epoch_change_notice_covers_the_epochs_it_passed_over() -> None:
    sender, reader = room_with([1, 2])
    deliver(reader, 1.1, "A", 1)
    send(sender, 3.0, "B", 1)  # B lived and died while the reader's node could not read Redis
    deliver(sender, 3.02, "B", 1)
    reader.received(5.0, {"type": "loss", "room": ROOM, "reason": "epoch_changed", "epoch": "A",
                          "from_offset": 2, "to_offset": None, "new_epoch": "C"})  # fmt: skip
    send(sender, 6.0, "C", 1)
    deliver(sender, 6.02, "C", 1)
    verdict = check([sender, reader])
    assert verdict.lost_with_notice == 2  # A:2 and all of B
    assert verdict.failures == {"missing": 1}  # C goes on from offset 1: C:1 is still owed
    deliver(reader, 6.1, "C", 1)
    assert check([sender, reader]).ok


def test_open_ended_notice_cannot_excuse_later_messages() -> None:
    sender, reader = room_with([1])
    reader.received(1.5, {"type": "gap", "room": ROOM, "epoch": "A"})
    send(sender, 9.0, "A", 2)
    deliver(sender, 9.1, "A", 2)
    verdict = check([sender, reader])
    assert verdict.lost_with_notice == 1
    assert verdict.failures == {"missing": 1}


def test_an_unacknowledged_message_seen_by_some_is_owed_to_all() -> None:
    sender, reader = room_with([])
    sender.sent(1.0, {"type": "message", "room": ROOM, "text": "fate?", "id": "fate?"})
    deliver(sender, 1.1, "A", 1, "fate?")
    sender.connection(1.2, "lost", "node-1")  # before the ack came
    verdict = check([sender, reader])
    assert verdict.unknown_fate == 1
    assert verdict.failures == {"missing_unacked": 1}


def test_verdict_counters_are_plain_numbers() -> None:
    counters = Verdict().counters()
    assert counters["missing"] == 0 and "missing_list" not in counters


def test_presence_diff_finds_ghosts_and_absentees() -> None:
    members = [{"username": "a", "connections": 1}, {"username": "ghost", "connections": 1},
               {"username": "b", "connections": 2}]  # fmt: skip
    assert diff({"a", "b", "c"}, members) == (["b", "ghost"], ["c"])
    assert diff({"a"}, [{"username": "a", "connections": 1}]) == ([], [])


def test_an_offset_reused_for_another_text_misses_the_acked_one() -> None:
    """A failover that loses a write reuses its offset: the reader got 2, but not *that* 2."""
    sender, reader = room_with([1, 2])
    deliver(reader, 1.1, "A", 1)
    deliver(reader, 2.5, "A", 2, "another text at offset 2")
    verdict = check([sender, reader])
    assert verdict.text_conflicts == 1
    # The reader never got the acked "mA2"; the sender never got the other text at 2.
    assert (verdict.missing, verdict.missing_unacked) == (1, 1)


def test_unanswered_message_on_a_kept_connection_is_a_failure() -> None:
    sender, reader = room_with([])
    sender.sent(1.0, {"type": "message", "room": ROOM, "text": "t1", "id": "t1"})
    sender.sent(1.0, {"type": "message", "room": ROOM, "text": "t2", "id": "t2"})
    sender.connection(2.0, "lost", "node-1")  # t1, t2: fate unknown, not a failure
    sender.sent(3.0, {"type": "message", "room": ROOM, "text": "t3", "id": "t3"})
    verdict = check([sender, reader])
    assert (verdict.unknown_fate, verdict.unanswered) == (2, 1)
    assert verdict.failures == {"unanswered": 1}
