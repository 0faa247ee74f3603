"""Judges what the clients saw against roomcast's delivery guarantee. Pure: no I/O, no clock.

Per room and epoch, over every member's log (``history.MemberLog``):

- every *owed* message — acknowledged to its sender, or delivered to anyone — reaches every
  member that was joined when it was published, exactly once and in offset order, unless that
  member got a loss notice covering it (``notices.loss_notice``: the one definition);
- no refused message (``error`` with the frame's ``id``) is ever delivered, except one answered
  ``unconfirmed`` (may or may not have been published: if it was, it is owed like any other);
- every message sent with an ``id`` is answered (``ack`` or ``error``) unless its connection was
  lost first;
- one offset carries one text for everyone, and one text is published at one offset only.

A member's duty starts at its first fresh ``joined`` (offset L of epoch E: owed are E's offsets
after L, and every epoch that appears later from its offset 1) and lasts to the end of the run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.history import CONNECTION, LOST, MemberLog
from tests.chaos.notices import Notice, loss_notice, membership_start

Message = tuple[str, int, str]  # epoch, offset, text
UNCONFIRMED = "unconfirmed"  # the error code of a message whose fate the node could not learn
EXAMPLES = 10  # problems listed by kind in a verdict, for a human to start from


@dataclass
class Missing:
    member: str
    room: str
    epoch: str
    offset: int
    acked: bool
    first_seen: float  # when the harness first learned the message existed


@dataclass
class RefusedDelivered:
    member: str
    room: str
    text: str
    refused_at: float  # when its sender got the error
    delivered_at: float


@dataclass
class Verdict:
    acknowledged: int = 0
    refused: int = 0
    unconfirmed: int = 0  # answered ``unconfirmed``: may be delivered or not, never in part
    unknown_fate: int = 0  # sent, then the connection died before ack or error
    unanswered: int = 0  # sent, connection kept, never acked nor refused
    published: int = 0  # distinct messages seen (acked or delivered)
    members: int = 0
    never_joined: int = 0
    owed: int = 0  # (member, message) pairs the guarantee covers
    delivered: int = 0  # owed pairs delivered
    missing: int = 0  # owed, acknowledged, not delivered, no notice
    missing_unacked: int = 0  # owed, delivered to someone but never acked, not here, no notice
    lost_with_notice: int = 0  # not delivered, covered by a notice
    duplicates: int = 0
    out_of_order: int = 0
    loss_notices: int = 0
    refused_delivered: int = 0
    text_conflicts: int = 0  # one offset, several texts
    republished: int = 0  # one text at several offsets
    missing_list: list[Missing] = field(default_factory=list)
    refused_delivered_list: list[RefusedDelivered] = field(default_factory=list)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def failures(self) -> dict[str, int]:
        counts = {
            "missing": self.missing,
            "missing_unacked": self.missing_unacked,
            "unanswered": self.unanswered,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "refused_delivered": self.refused_delivered,
            "text_conflicts": self.text_conflicts,
            "republished": self.republished,
        }
        return {name: value for name, value in counts.items() if value}

    @property
    def ok(self) -> bool:
        return not self.failures

    def note(self, kind: str, text: str) -> None:
        bucket = self.examples.setdefault(kind, [])
        if len(bucket) < EXAMPLES:
            bucket.append(text)

    def counters(self) -> dict[str, int]:
        return {
            name: value
            for name, value in vars(self).items()
            if isinstance(value, int) and not isinstance(value, bool)
        }


@dataclass
class _Room:
    # A message is (epoch, offset, text): when a failover reuses an offset, the two messages
    # that share it are both owed, and a member that got one of them still misses the other.
    first_seen: dict[Message, float] = field(default_factory=dict)
    acked: set[Message] = field(default_factory=set)

    def see(self, message: Message, t: float) -> None:
        self.first_seen[message] = min(t, self.first_seen.get(message, t))


def _position(event: dict[str, Any]) -> tuple[str, int] | None:
    epoch, offset = event.get("epoch"), event.get("offset")
    if isinstance(epoch, str) and isinstance(offset, int) and not isinstance(offset, bool):
        return epoch, offset
    return None


def _message(event: dict[str, Any], text: str) -> Message | None:
    position = _position(event)
    return None if position is None else (*position, text)


def check(logs: Iterable[MemberLog]) -> Verdict:
    logs = list(logs)
    verdict = Verdict(members=len(logs))
    rooms: dict[str, _Room] = {}
    refused_texts: dict[str, float] = {}  # text -> when its refusal arrived

    # Pass 1: what exists. Acks and deliveries name (epoch, offset, text); errors name refusals.
    for log in logs:
        room = rooms.setdefault(log.room, _Room())
        _scan_sends(log, room, refused_texts, verdict)
        for entry in log.entries:
            event = entry.event
            if entry.direction == "in" and event.get("type") == "message":
                message = _message(event, str(event.get("text")))
                if message is not None and event.get("room") == log.room:
                    room.see(message, entry.t)

    for name, room in sorted(rooms.items()):
        verdict.published += len(room.first_seen)
        texts_at: dict[tuple[str, int], set[str]] = {}
        positions_of: dict[str, set[tuple[str, int]]] = {}
        for epoch, offset, text in room.first_seen:
            texts_at.setdefault((epoch, offset), set()).add(text)
            positions_of.setdefault(text, set()).add((epoch, offset))
        for (epoch, offset), texts in sorted(texts_at.items()):
            if len(texts) > 1:
                verdict.text_conflicts += 1
                verdict.note("text_conflicts", f"{name} {epoch}:{offset} carries {sorted(texts)}")
        for text, positions in sorted(positions_of.items()):
            if len(positions) > 1:
                verdict.republished += 1
                verdict.note("republished", f"{name} {text!r} at {sorted(positions)}")

    # Pass 2: each member against what exists.
    for log in logs:
        _check_member(log, rooms.setdefault(log.room, _Room()), refused_texts, verdict)
    return verdict


def _scan_sends(
    log: MemberLog, room: _Room, refused_texts: dict[str, float], verdict: Verdict
) -> None:
    """Acks and refusals of this member's messages; what was never answered, and whether its
    connection was lost meanwhile (then the fate is unknown) or not (then it is a bug: every
    message with an ``id`` gets ``ack`` or ``error``)."""
    waiting: dict[Any, str] = {}
    texts: dict[Any, str] = {}
    for entry in log.entries:
        event = entry.event
        if entry.direction == "out":
            if event.get("type") == "message" and "id" in event:
                waiting[event["id"]] = texts[event["id"]] = str(event.get("text"))
            continue
        if entry.direction == CONNECTION and event.get("type") == LOST:
            verdict.unknown_fate += len(waiting)
            waiting.clear()
            continue
        kind, ident = event.get("type"), event.get("id")
        if ident not in texts:
            continue
        if kind == "ack":
            message = _message(event, texts[ident])
            if message is not None:
                verdict.acknowledged += 1
                room.acked.add(message)
                room.see(message, entry.t)
        elif kind == "error" and event.get("code") == UNCONFIRMED:
            # "May or may not have been published": either is right, and if it was, it is
            # owed to everyone like any message delivered to anyone.
            verdict.unconfirmed += 1
        elif kind == "error":
            verdict.refused += 1
            refused_texts[texts[ident]] = entry.t
        else:
            continue
        waiting.pop(ident, None)
    verdict.unanswered += len(waiting)
    for ident in list(waiting)[:EXAMPLES]:
        verdict.note("unanswered", f"{log.member} sent {ident!r}: no ack, no error")


def _check_member(
    log: MemberLog, room: _Room, refused_texts: dict[str, float], verdict: Verdict
) -> None:
    start: Notice | None = None
    notices: list[Notice] = []
    delivered: set[Message] = set()
    highest: dict[str, int] = {}
    for entry in log.entries:
        event = entry.event
        if entry.direction != "in" or event.get("room") not in (None, log.room):
            continue
        if start is None:
            if event.get("type") == "joined":
                start = membership_start(event, entry.t)
            continue
        notice = loss_notice(event, entry.t)
        if notice is not None:
            notices.append(notice)
            verdict.loss_notices += 1
            continue
        if event.get("type") != "message" or event.get("room") != log.room:
            continue
        text = str(event.get("text"))
        message = _message(event, text)
        if message is None:
            continue
        if text in refused_texts:
            verdict.refused_delivered += 1
            verdict.refused_delivered_list.append(
                RefusedDelivered(log.member, log.room, text, refused_texts[text], entry.t)
            )
            verdict.note("refused_delivered", f"{log.member} got refused {text!r}")
        if message in delivered:
            verdict.duplicates += 1
            verdict.note("duplicates", f"{log.member} got {message[:2]} {text!r} again")
            continue
        delivered.add(message)
        epoch, offset, _ = message
        if offset <= highest.get(epoch, 0):
            verdict.out_of_order += 1
            verdict.note(
                "out_of_order", f"{log.member} got {epoch}:{offset} after {highest[epoch]}"
            )
        highest[epoch] = max(offset, highest.get(epoch, 0))

    if start is None:
        verdict.never_joined += 1
        return
    for message, first_seen in room.first_seen.items():
        epoch, offset, _ = message
        if start.covers(epoch, offset, first_seen):
            continue  # before this member joined
        verdict.owed += 1
        if message in delivered:
            verdict.delivered += 1
        elif any(n.covers(epoch, offset, first_seen) for n in notices):
            verdict.lost_with_notice += 1
        else:
            acked = message in room.acked
            if acked:
                verdict.missing += 1
            else:
                verdict.missing_unacked += 1
            verdict.missing_list.append(
                Missing(log.member, log.room, epoch, offset, acked, first_seen)
            )
            verdict.note("missing", f"{log.member} never got {log.room} {epoch}:{offset}")
