"""Big rooms: above a size threshold, per-member presence events are coalesced. No I/O.

In a room of N members every ``user_joined`` is N frames, so N people joining (a reconnect storm,
an event starting) cost N²/2 frames, and every ``typing`` is N frames too. Above the threshold a
node stops fanning out ``user_joined``/``user_left``/``typing`` and sends each local member a
``presence_changed`` notice instead (joined, left, connections), at most once per interval per
room: a storm of K joins costs each member about ``duration / interval + 1`` frames, not K.

The size is cluster-wide (members on every node) and read cheaply: every join and leave of a
room passes through each node subscribed to it, so a node counts them (+1/-1), and each join
made here sets the count to Redis's exact figure: the join script returns the presence hash's
length at its own ``user_joined``, and the node adds what it saw on the channel after that
event (the join's marker), so the figure is exact in the broker's order whichever of the reply
and the channel came first. Nodes may disagree by the events in flight; that is harmless, each
tells its own members which mode it is in. A room that became big stays big until it falls below
``threshold * SHRINK_RATIO``: at the border, churn would otherwise flip it on every join and
leave, and each flip is a notice to every member.

A room of any size has the joins and leaves of a client coalesced the same way while that client
churns (``core.churn``): faster than a rate after a burst, in this room. Everybody else is still
named, unless the room's named joins and leaves together churn too (several clients at once):
then the whole room is coalesced. The room is per-member again once every bucket has refilled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from roomcast.core.churn import UNTOLD, RoomChurn

# A big room becomes small again only below this share of the threshold (hysteresis).
SHRINK_RATIO: Final = 0.9
# A notice is one frame per member: in a room of N, notices come at most every N / this many
# seconds (and never closer than the interval), so that telling a room of 100,000 what changed
# costs no more deliveries per second than telling one of 5,000. Measured: at one notice per
# second, a 10,000-member room's notices cost more node CPU than the joins of a slow storm.
NOTICE_DELIVERIES_PER_SECOND: Final = 5000


@dataclass(frozen=True, slots=True)
class Notice:
    """A ``presence_changed`` for the room's local members."""

    room: str
    joined: int  # connections that joined since the last notice
    left: int  # and that left
    connections: int  # the room's connections over every node, as this node counts them
    big: bool  # False: the room is small again, per-member events resume from here


@dataclass(frozen=True, slots=True)
class Step:
    """What to do with one join or leave event."""

    deliver: bool  # fan the per-member event out as before (the room is small)
    notice: Notice | None = None  # send this first, now
    flush_in: float | None = None  # schedule flush() of the room after this many seconds


@dataclass(frozen=True, slots=True)
class Mark:
    """Where a room's count was when a join's own user_joined came by (see counted)."""

    generation: int
    net: int


@dataclass(slots=True)
class _Room:
    generation: int
    size: int = 0
    net: int = 0  # joins minus leaves seen since the node counts the room
    big: bool = False
    joined: int = 0
    left: int = 0
    last_notice: float = float("-inf")
    scheduled: bool = False
    churn: RoomChurn = field(default_factory=RoomChurn)


_SMALL: Final = Step(deliver=True)
_HELD: Final = Step(deliver=False)


class BigRooms:
    """The size and mode of each room this node is subscribed to, and its pending notice."""

    def __init__(self, threshold: int, interval: float) -> None:
        # threshold 0: off, every room behaves as a small one whatever its size.
        self.threshold = threshold
        self.interval = interval
        self._shrink_below = int(threshold * SHRINK_RATIO)
        self._rooms: dict[str, _Room] = {}
        self._generations = 0

    def is_big(self, room: str) -> bool:
        state = self._rooms.get(room)
        return state is not None and state.big

    def size(self, room: str) -> int | None:
        state = self._rooms.get(room)
        return None if state is None else state.size

    def mark(self, room: str) -> Mark | None:
        """Call when a join's own user_joined was seen (after note): its reply counts to here."""
        state = self._rooms.get(room)
        return None if state is None else Mark(state.generation, state.net)

    def counted(self, room: str, connections: int, mark: Mark | None, now: float) -> Notice | None:
        """Redis's exact count of the room's connections at a join made here (its reply), and
        where the channel was at that join: the count from here. Returns a notice to send when
        this makes a big room small again."""
        if not self.threshold:
            return None
        state = self._state(room)
        after = 0
        if mark is not None and mark.generation == state.generation:
            after = state.net - mark.net  # seen on the channel after the join: not in the reply
        state.size = max(0, connections + after)
        return self._after_change(room, state, now)

    def note(self, room: str, joined: bool, now: float, cause: str = UNTOLD) -> Step:
        """A ``user_joined`` (``joined``) or ``user_left`` seen on the room's channel, caused by
        the client ``cause`` (``core.churn``)."""
        if not self.threshold:
            return _SMALL
        state = self._state(room)
        change = 1 if joined else -1
        state.size = max(0, state.size + change)
        state.net += change
        # Churn that ended before this event: told first, this one is judged afresh.
        notice = self._churn_ended(room, state, now)
        coalesced = state.churn.coalesced(cause, now)
        shrunk = self._after_change(room, state, now)
        if shrunk is not None:
            notice = shrunk
        if not (state.big or coalesced):
            return _SMALL if notice is None else Step(deliver=True, notice=notice)
        if joined:
            state.joined += 1
        else:
            state.left += 1
        if state.scheduled:
            return _HELD if notice is None else Step(deliver=False, notice=notice)
        wait = state.last_notice + self.spacing(state.size) - now
        if wait <= 0:
            # Quiet for an interval: this one is told at once, what follows waits its turn.
            return Step(deliver=False, notice=self._take(room, state, now))
        state.scheduled = True
        return Step(deliver=False, notice=notice, flush_in=wait)

    def spacing(self, size: int) -> float:
        """Seconds between two notices of a room of ``size`` connections, at least."""
        return max(self.interval, size / NOTICE_DELIVERIES_PER_SECOND)

    def flush(self, room: str, now: float) -> Notice | None:
        """The scheduled notice of ``room`` (None: nothing to tell, or the room is gone)."""
        state = self._rooms.get(room)
        if state is None:
            return None
        state.scheduled = False
        if not (state.big or state.churn.churning) or not (state.joined or state.left):
            return None
        return self._take(room, state, now)

    def forget(self, room: str) -> None:
        """This node left the room (no local member): its count would go stale."""
        self._rooms.pop(room, None)

    def _state(self, room: str) -> _Room:
        state = self._rooms.get(room)
        if state is None:
            self._generations += 1
            state = self._rooms[room] = _Room(self._generations)
        return state

    def _after_change(self, room: str, state: _Room, now: float) -> Notice | None:
        """Big by size (with hysteresis); a notice (big=False) when a big room is coalesced no
        more, neither big nor churning."""
        if not state.big:
            if state.size >= self.threshold:
                # From this event on: the first notice (big=True) tells members the mode.
                state.big = True
            return None
        if state.size >= self._shrink_below:
            return None
        state.big = False
        if state.churn.churning:
            return None
        return self._resume(room, state, now)

    def _churn_ended(self, room: str, state: _Room, now: float) -> Notice | None:
        """A notice (big=False) when the churn of a small room is over: per-member events
        resume."""
        churn = state.churn
        if not churn.churning or not churn.settle(now) or state.big:
            return None
        return self._resume(room, state, now)

    def _resume(self, room: str, state: _Room, now: float) -> Notice:
        notice = Notice(room, state.joined, state.left, state.size, big=False)
        state.joined = state.left = 0
        state.last_notice = now
        return notice

    def _take(self, room: str, state: _Room, now: float) -> Notice:
        notice = Notice(room, state.joined, state.left, state.size, big=True)
        state.joined = state.left = 0
        state.last_notice = now
        return notice
