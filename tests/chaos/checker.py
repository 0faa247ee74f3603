"""Judges what the clients saw against roomcast's delivery guarantee. Pure: no I/O, no clock.

Per room and epoch, over every member's log (``history.MemberLog``):

- every *owed* message — acknowledged to its sender, or delivered to anyone — reaches every
  member that was joined when it was published, exactly once and in offset order, unless that
  member got a loss notice covering it (``notices.loss_notice``: the one definition);
- no refused message (``error`` with the frame's ``id``) is ever delivered;
- one offset carries one text for everyone, and one text is published at one offset only.

A member's duty starts at its first fresh ``joined`` (offset L of epoch E: owed are E's offsets
after L, and every epoch that appears later from its offset 1) and lasts to the end of the run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.history import MemberLog
from tests.chaos.notices import Notice, loss_notice, membership_start

Key = tuple[str, str, int]  # room, epoch, offset
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
class Verdict:
    acknowledged: int = 0
    refused: int = 0
    unknown_fate: int = 0  # sent, then the connection died before ack or error
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
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def failures(self) -> dict[str, int]:
        counts = {
            "missing": self.missing,
            "missing_unacked": self.missing_unacked,
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
    texts: dict[tuple[str, int], set[str]] = field(default_factory=dict)
    first_seen: dict[tuple[str, int], float] = field(default_factory=dict)
    acked: set[tuple[str, int]] = field(default_factory=set)
    offsets_of_text: dict[str, set[tuple[str, int]]] = field(default_factory=dict)

    def see(self, epoch: str, offset: int, text: str, t: float) -> None:
        key = (epoch, offset)
        self.texts.setdefault(key, set()).add(text)
        self.first_seen[key] = min(t, self.first_seen.get(key, t))
        self.offsets_of_text.setdefault(text, set()).add(key)


def _message_key(event: dict[str, Any]) -> tuple[str, int] | None:
    epoch, offset = event.get("epoch"), event.get("offset")
    if isinstance(epoch, str) and isinstance(offset, int) and not isinstance(offset, bool):
        return epoch, offset
    return None


def check(logs: Iterable[MemberLog]) -> Verdict:
    logs = list(logs)
    verdict = Verdict(members=len(logs))
    rooms: dict[str, _Room] = {}
    refused_texts: set[str] = set()

    # Pass 1: what exists. Acks and deliveries name (epoch, offset, text); errors name refusals.
    for log in logs:
        room = rooms.setdefault(log.room, _Room())
        sent: dict[Any, str] = {}
        answered: set[Any] = set()
        for entry in log.entries:
            event = entry.event
            if entry.direction == "out":
                if event.get("type") == "message" and "id" in event:
                    sent[event["id"]] = str(event.get("text"))
                continue
            kind = event.get("type")
            key = _message_key(event)
            if kind == "ack" and key is not None and event.get("id") in sent:
                answered.add(event["id"])
                verdict.acknowledged += 1
                room.acked.add(key)
                room.see(*key, sent[event["id"]], entry.t)
            elif kind == "error" and event.get("id") in sent:
                answered.add(event["id"])
                verdict.refused += 1
                refused_texts.add(sent[event["id"]])
            elif kind == "message" and key is not None and event.get("room") == log.room:
                room.see(*key, str(event.get("text")), entry.t)
        verdict.unknown_fate += len(set(sent) - answered)

    for name, room in sorted(rooms.items()):
        verdict.published += len(room.texts)
        for (epoch, offset), texts in sorted(room.texts.items()):
            if len(texts) > 1:
                verdict.text_conflicts += 1
                verdict.note("text_conflicts", f"{name} {epoch}:{offset} carries {sorted(texts)}")
        for text, keys in room.offsets_of_text.items():
            if len(keys) > 1:
                verdict.republished += 1
                verdict.note("republished", f"{name} {text!r} at {sorted(keys)}")

    # Pass 2: each member against what exists.
    for log in logs:
        _check_member(log, rooms.setdefault(log.room, _Room()), refused_texts, verdict)
    return verdict


def _check_member(log: MemberLog, room: _Room, refused_texts: set[str], verdict: Verdict) -> None:
    start: Notice | None = None
    notices: list[Notice] = []
    delivered: set[tuple[str, int]] = set()
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
        key = _message_key(event)
        if key is None:
            continue
        if str(event.get("text")) in refused_texts:
            verdict.refused_delivered += 1
            verdict.note("refused_delivered", f"{log.member} got refused {event.get('text')!r}")
        if key in delivered:
            verdict.duplicates += 1
            verdict.note("duplicates", f"{log.member} got {key} again")
            continue
        delivered.add(key)
        epoch, offset = key
        if offset < highest.get(epoch, 0):
            verdict.out_of_order += 1
            verdict.note(
                "out_of_order", f"{log.member} got {epoch}:{offset} after {highest[epoch]}"
            )
        highest[epoch] = max(offset, highest.get(epoch, 0))

    if start is None:
        verdict.never_joined += 1
        return
    for key, first_seen in room.first_seen.items():
        epoch, offset = key
        if start.covers(epoch, offset, first_seen):
            continue  # before this member joined
        verdict.owed += 1
        if key in delivered:
            verdict.delivered += 1
        elif any(n.covers(epoch, offset, first_seen) for n in notices):
            verdict.lost_with_notice += 1
        else:
            acked = key in room.acked
            if acked:
                verdict.missing += 1
            else:
                verdict.missing_unacked += 1
            verdict.missing_list.append(
                Missing(log.member, log.room, epoch, offset, acked, first_seen)
            )
            verdict.note("missing", f"{log.member} never got {log.room} {epoch}:{offset}")
