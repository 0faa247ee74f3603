"""Which server events count as an explicit loss notice, in one place.

The guarantee (docs/guarantees.md; issue 14): every acknowledged message of a
room reaches every member that stayed joined exactly once and in order, *or* the member is told
what it lost. The checker excuses a message it did not get only with one of these notices:

1. ``joined`` with ``"recovered": false`` (any ``reason``: ``epoch_changed``, ``too_old``,
   ``overloaded``…) — and any other event carrying ``"recovered": false`` with an ``epoch`` and
   an ``offset``: it excuses offsets ``1..offset`` of that epoch, and every *other* epoch's
   messages that existed before the notice (the history it replaces).
2. A dedicated loss event: any event with a ``room`` whose ``type`` is one of
   :data:`LOSS_EVENT_TYPES`. Its optional ``epoch`` names the epoch (absent: any epoch); the
   lost range is inclusive, from ``from``/``first``/``from_offset``/``start`` (or ``since`` + 1)
   to ``to``/``last``/``to_offset``/``end``/``until``, or the span of an ``offsets`` list.
   A missing lower bound means offset 1; a missing upper bound means "everything up to now".
   ``previous_epoch``/``old_epoch`` names an epoch lost entirely.
3. A ``loss`` with ``"reason": "epoch_changed"`` also covers every epoch *between* its ``epoch``
   and its ``new_epoch`` (any epoch but those two, seen before the notice arrived): Redis may
   have restarted empty several times while the member's node could not read it, and the
   epochs it never saw are gone with their data (docs/guarantees.md).

"Up to now" and "other epochs" only ever excuse messages the harness had already seen (acked or
delivered to someone) at most :data:`NOTICE_SLACK_SECONDS` after the notice arrived: a notice
cannot excuse what was published after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

LOSS_EVENT_TYPES: Final = frozenset(
    {"loss", "lost", "gap", "messages_lost", "loss_notice", "history_lost", "epoch_changed"}
)
# The ack of a message and another member's notice travel on different sockets; a message
# published just before a notice may be first seen by the harness a little after it.
NOTICE_SLACK_SECONDS: Final = 1.0

_LOWER_INCLUSIVE = ("from", "first", "from_offset", "start")
_UPPER_INCLUSIVE = ("to", "last", "to_offset", "end", "until")


@dataclass(frozen=True)
class Notice:
    """Messages of one room a member was told it will not get."""

    t: float
    epoch: str | None  # None: any epoch
    first: int = 1
    last: int | None = None  # None: every offset seen up to the notice (plus slack)
    other_epochs: bool = False  # every other epoch seen up to the notice
    # Every epoch but ``epoch`` and ``next_epoch`` seen before the notice (no slack: the
    # epochs an epoch_changed notice passes over ended before it was sent).
    between_epochs: bool = False
    next_epoch: str | None = None
    whole_epoch: str | None = None  # an epoch lost entirely (seen up to the notice)
    kind: str = "notice"
    slack: float = NOTICE_SLACK_SECONDS

    def covers(self, epoch: str, offset: int, first_seen: float) -> bool:
        seen_before = first_seen <= self.t + self.slack
        in_range = self.first <= offset and (
            (self.last is None and seen_before) or (self.last is not None and offset <= self.last)
        )
        if in_range and (self.epoch is None or epoch == self.epoch):
            return True
        if self.whole_epoch is not None and epoch == self.whole_epoch and seen_before:
            return True
        if self.between_epochs and epoch not in (self.epoch, self.next_epoch):
            return first_seen <= self.t
        return self.other_epochs and epoch != self.epoch and seen_before


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _first_int(event: dict[str, Any], names: tuple[str, ...]) -> int | None:
    for name in names:
        value = _int(event.get(name))
        if value is not None:
            return value
    return None


def loss_notice(event: dict[str, Any], t: float) -> Notice | None:
    """The notice ``event`` (received at ``t``) gives, or None if it is not a loss notice."""
    kind = event.get("type")
    epoch = event.get("epoch") if isinstance(event.get("epoch"), str) else None
    if event.get("recovered") is False:
        offset = _int(event.get("offset"))
        if epoch is not None and offset is not None:
            reason = str(event.get("reason", "unknown"))
            return Notice(t, epoch, 1, offset, other_epochs=True, kind=f"{kind}:{reason}")
    if kind not in LOSS_EVENT_TYPES:
        return None
    first = _first_int(event, _LOWER_INCLUSIVE)
    last = _first_int(event, _UPPER_INCLUSIVE)
    since = _int(event.get("since"))
    if first is None and since is not None:
        first = since + 1
    offsets = event.get("offsets")
    if isinstance(offsets, list) and offsets and all(_int(o) is not None for o in offsets):
        first, last = min(offsets), max(offsets)
    old = event.get("previous_epoch", event.get("old_epoch"))
    new = event.get("new_epoch")
    return Notice(
        t,
        epoch,
        first if first is not None else 1,
        last,
        whole_epoch=old if isinstance(old, str) else None,
        kind=str(kind),
        between_epochs=kind == "loss" and event.get("reason") == "epoch_changed",
        next_epoch=new if isinstance(new, str) else None,
    )


def membership_start(event: dict[str, Any], t: float) -> Notice | None:
    """A first, fresh ``joined`` (no ``since``): what came before it was never owed."""
    epoch, offset = event.get("epoch"), _int(event.get("offset"))
    if event.get("type") != "joined" or not isinstance(epoch, str) or offset is None:
        return None
    return Notice(t, epoch, 1, offset, other_epochs=True, kind="start", slack=0.0)
