"""Each room's chat messages handed to the node once, in offset order, gaps filled from history,
and what cannot be filled announced with a ``loss`` event instead of skipped in silence.

Pub/sub is at-most-once: whatever Redis published while this node did not listen never reaches
it live, and this node cannot even tell. That happens in every topology:
- the subscriber link was dropped and re-made (Redis restarted, ``CLIENT KILL TYPE pubsub``, an
  overflowing ``client-output-buffer-limit pubsub``, a Sentinel failover, a network cut);
- Redis Cluster moved a room's slot (the ASK window of a migration, or the moment between
  ``SETSLOT NODE`` and our ``SSUBSCRIBE``).
But chat messages carry the room's offset and epoch, and the room's history holds them: so
whenever a subscription is made again, a publication of ours was served elsewhere, or a live
offset skips ahead, the room's live stream is held, the missing offsets are read from history and
handed over first, then the held stream resumes, without the duplicates the two sources overlap by.

When history cannot fill a gap, the node's members are told with one ``loss`` event (see
``protocol.loss``): the room's epoch changed (Redis lost its data: everything after the last
offset delivered in the old epoch is gone, and the new epoch is filled from its offset 1), the
offsets are older than the history kept (``too_old``), or Redis could not be read in time
(``unavailable``).

Only chat messages are sequenced; events without an offset (``user_joined``, ``typing``) pass
straight through, and those published where no one listened are lost for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from roomcast.broker import BrokerUnavailable, HistoryReply, MessageHandler
from roomcast.wire import envelope, protocol

log = logging.getLogger("roomcast.broker.live_gaps")

_EPOCH_MARK: Final = b',"epoch":"'
_FIRST_READ: Final = 64  # messages asked for at first; more only when the gap is wider
_HOLD_LIMIT: Final = 10_000  # live events held during one catch-up before giving up on it
_RETRY_DELAY: Final = 0.05
_LEFT_EPOCHS_KEPT: Final = 4  # epochs a room left behind whose late messages are dropped
# Names of epochs left further back, kept (without their offsets) so that a return to one of
# them is told as a loss rather than handed over again from its offset 1 (every message twice).
_FORGOTTEN_EPOCHS_KEPT: Final = 64
# A live message of an epoch left makes the node look in history (the room may be back in it),
# at most this often per room: an old primary still publishing costs a read a second, no more.
_STALE_RECHECK_INTERVAL: Final = 1.0

HistoryReader = Callable[[str, int], Awaitable[HistoryReply]]


def sequence_of(payload: bytes) -> tuple[int, str]:
    """(offset, epoch) of a chat message; (0, "") for events outside the room's sequence.

    Every payload of every room passes here (user_joined and typing included), so it reads the
    offset in place instead of unpacking the whole envelope (the node does that once, after)."""
    try:
        offset, start = envelope.offset_of(payload)
    except envelope.EnvelopeError:
        return 0, ""
    if offset == 0:
        return 0, ""
    # The publish script ends every message with ``,"epoch":"<epoch>"}``.
    mark = payload.rfind(_EPOCH_MARK, start)
    if mark < 0 or not payload.endswith(b'"}'):
        return 0, ""
    try:
        return offset, payload[mark + len(_EPOCH_MARK) : -2].decode()
    except UnicodeDecodeError:
        return 0, ""


@dataclass(slots=True)
class _Room:
    epoch: str = ""  # "" while no chat message or join reply told us where the room stands
    last: int = 0  # offset of the last chat message handed over in ``epoch``
    # The room's epoch changed to one that had no message yet: the next epoch seen is adopted
    # from its offset 1 (not as a fresh baseline), so its first messages cannot be skipped.
    from_start: bool = False
    # Epochs left behind (announced as lost), oldest first, each with the last offset handed
    # over in it: a room whose history comes back in one of them goes on after that offset.
    left: dict[str, int] = field(default_factory=dict)
    # Epochs pushed out of ``left`` (oldest first): something of each was handed over, where
    # up to is no longer known.
    forgotten: dict[str, None] = field(default_factory=dict)
    # Epochs heard live but never adopted (history answered ours: see _remember_foreign), whose
    # messages are dropped, each with whether members were told (_lose_foreign). Kept apart
    # from ``left``: they must not push out an epoch something was handed over in.
    foreign: dict[str, bool] = field(default_factory=dict)
    stale_looking: bool = False  # the running catch-up was asked for by a stale look
    held: list[bytes] | None = None  # live payloads held while a catch-up runs
    # A catch-up gave up: the next chat message is taken as it comes (history cannot be read),
    # and what lies between the last one handed over and it is announced by its exact range.
    adopt_next: bool = False
    # Offsets of ``epoch`` from ``reused_from`` up to ``reused`` were announced as published
    # again (history went back below ``last``): a later look that finds it still behind does
    # not say them twice (``reused`` 0: none was).
    reused: int = 0
    reused_from: int = 0
    again: bool = False  # asked to look again while a catch-up was running
    stale_checked: float = float("-inf")  # when a stale message last made us look in history
    # A stale message came within the interval: look once it ends (it may be the room's last).
    stale_look: asyncio.TimerHandle | None = None
    task: asyncio.Task[None] | None = None


class LiveGaps:
    """Sits between a broker's subscriber links and the node's message handler."""

    def __init__(
        self,
        deliver: MessageHandler,
        read_history: HistoryReader,
        history_size: int,
        patience: float,
    ) -> None:
        self._deliver = deliver
        self._read_history = read_history
        self._history_size = max(1, history_size)
        self._patience = patience  # how long a catch-up keeps retrying an unavailable history
        self._rooms: dict[str, _Room] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.filled = 0  # messages handed over from history, not live
        self.duplicates = 0  # live messages dropped because history had handed them over
        self.given_up = 0  # catch-ups that ran out of patience (announced as a loss)
        self.losses = 0  # loss events handed to the node
        self.stale = 0  # live messages of an epoch already announced as lost

    def counters(self) -> dict[str, int]:
        return {
            "filled": self.filled,
            "duplicates": self.duplicates,
            "losses": self.losses,
            "given_up": self.given_up,
            "stale": self.stale,
        }

    # What the broker tells us

    def track(self, room: str) -> None:
        """``room`` is subscribed from now on."""
        self._rooms.setdefault(room, _Room())

    def tracks(self, room: str) -> bool:
        """Whether the node listens to ``room`` (between :meth:`track` and :meth:`forget`)."""
        return room in self._rooms

    def forget(self, room: str) -> None:
        state = self._rooms.pop(room, None)
        if state is not None:
            _cancel_stale_look(state)
            if state.task is not None:
                state.task.cancel()

    def baseline(self, room: str, epoch: str, offset: int) -> None:
        """Where the room stood when a join read it: messages after ``offset`` must come.

        Used only while nothing else told us where the room stands: once live messages did,
        they are the truth, and a join reply read before a message that is still on its way
        on the subscriber link must not mark that message as already handed over.
        """
        state = self._rooms.get(room)
        if state is None or state.epoch or state.from_start:
            return
        state.epoch, state.last = epoch, offset

    def position(self, room: str) -> tuple[str, int]:
        """(epoch, last offset) handed over for ``room``; ("", 0) while that is not known.
        Every message published from now on comes after it."""
        state = self._rooms.get(room)
        if state is None or state.from_start:
            return "", 0
        return state.epoch, state.last

    def recheck(self, room: str) -> None:
        """Something may have been published where this node did not listen: look in history."""
        state = self._rooms.get(room)
        if state is None or not (state.epoch or state.from_start):
            return
        if state.held is not None:
            state.again = True
            return
        state.held = []
        self._spawn(room, state)

    # The hot path

    def receive(self, room: str, payload: bytes) -> None:
        state = self._rooms.get(room)
        if state is None:
            self._deliver(room, payload)
            return
        if state.held is not None:
            state.held.append(payload)
            if len(state.held) > _HOLD_LIMIT:
                self._give_up(room, state, "too much held")
            return
        offset, epoch = sequence_of(payload)
        if offset == 0:
            self._deliver(room, payload)
            return
        if state.adopt_next:
            self._adopt(room, state, epoch, offset, payload)
            return
        if epoch != state.epoch:
            if epoch in state.left or epoch in state.foreign:
                self.stale += 1  # inside a range already announced as lost
                self._recheck_stale(room, state)
                return
            if state.from_start and epoch not in state.forgotten:
                state.epoch, state.last, state.from_start = epoch, 0, False
            elif not state.epoch and not state.from_start:
                # A first message: the baseline.
                state.epoch, state.last = epoch, offset
                self._deliver(room, payload)
                return
            else:
                # The room started over (Redis lost it): announce, then fill the new epoch.
                state.held = [payload]
                self._spawn(room, state)
                return
        if offset <= state.last:
            self.duplicates += 1
        elif offset == state.last + 1:
            state.last = offset
            self._deliver(room, payload)
        else:
            state.held = [payload]
            self._spawn(room, state)

    def _recheck_stale(self, room: str, state: _Room) -> None:
        """A message of an epoch left: late (the range was announced lost), or the room is back
        in that epoch without this node's links being re-made since (or their history read
        answered before the return): only history tells, and a catch-up that finds the epoch
        back goes on in it (:meth:`_change_epoch`), filling what was dropped meanwhile."""
        now = time.monotonic()
        wait = state.stale_checked + _STALE_RECHECK_INTERVAL - now
        if wait > 0:
            # Dropped without a look: if no message comes after it (the room's last for a
            # while), nothing else would make one, and it would stay held from every member.
            if state.stale_look is None:
                loop = asyncio.get_running_loop()
                state.stale_look = loop.call_later(wait, self._stale_look_due, room, state)
            return
        _cancel_stale_look(state)
        state.stale_checked = now
        state.stale_looking = True
        self.recheck(room)

    def _stale_look_due(self, room: str, state: _Room) -> None:
        state.stale_look = None
        if self._rooms.get(room) is state:
            self._recheck_stale(room, state)

    # Catching up

    def _spawn(self, room: str, state: _Room) -> None:
        task = asyncio.create_task(self._catch_up(room, state), name=f"catch-up {room}")
        state.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _catch_up(self, room: str, state: _Room) -> None:
        deadline = time.monotonic() + self._patience
        limit = _FIRST_READ
        while True:
            state.again = False
            stale_look, state.stale_looking = state.stale_looking, False
            heard_before = len(state.held or ())  # held before this read was sent
            try:
                reply = await self._read_history(room, limit)
            except BrokerUnavailable as exc:
                if time.monotonic() > deadline:
                    self._give_up(room, state, str(exc))
                    return
                await asyncio.sleep(_RETRY_DELAY)
                continue
            if self._rooms.get(room) is not state:
                return  # left meanwhile
            if reply.epoch != state.epoch:
                self._change_epoch(room, state, reply.epoch, reply.offset)
                if state.from_start:
                    break  # no message in the new epoch yet: all of it will come live
            else:
                # Same epoch, history ending before what was handed over: Redis failed over to
                # a replica that had not received the last messages, and kept the epoch.
                self._lose_reused(room, state, reply.offset)
                if stale_look:
                    self._lose_foreign(room, state)
                self._remember_foreign(room, state)
            wanted = reply.offset - state.last
            if wanted > len(reply.messages) and limit < min(wanted, self._history_size):
                limit = min(wanted, self._history_size)
                continue
            first = reply.offset - len(reply.messages) + 1
            if first > state.last + 1:
                self._fill_from_held(room, state, first)
            for index, message in enumerate(reply.messages):
                offset = first + index
                if offset > state.last:
                    state.last = offset
                    self.filled += 1
                    self._deliver(room, envelope.pack(time.time(), message, "", offset))
            if not state.again:
                if not _ahead_of_history(state, heard_before, reply.offset):
                    break
                # A message of this epoch heard before the read, past the end of the history
                # it answered: gone with a server that failed over (the epoch kept), or the
                # read was served by one behind. Released, it would be a gap again at once and
                # read history again as fast as Redis answers; look again later instead (a
                # message the new primary writes at its offset comes meanwhile, and settles it).
                await asyncio.sleep(_STALE_RECHECK_INTERVAL)
            limit = _FIRST_READ
        self._release(room, state)

    def _remember_foreign(self, room: str, state: _Room) -> None:
        """History is in the room's epoch, yet live messages of another one, not left either,
        are held: a server no longer primary published them (or our read went to a server
        behind the one that did). Each would send the node back to history at once, in a loop
        as fast as Redis answers. Remembered as foreign (nothing of it handed over), they are
        dropped as stale (history looked at again at most once a second, and members told if
        it still answers ours: _lose_foreign); should history come to be in that epoch, it is
        handed over from its offset 1."""
        for payload in state.held or ():
            offset, epoch = sequence_of(payload)
            if offset and epoch != state.epoch and epoch not in state.left:
                state.foreign.setdefault(epoch, False)
                state.stale_checked = time.monotonic()  # history was just read
        while len(state.foreign) > _LEFT_EPOCHS_KEPT:
            # Forgotten, its messages would be dropped no more: members are told first.
            oldest = next(iter(state.foreign))
            self._tell_foreign(room, state, oldest)
            del state.foreign[oldest]

    def _lose_foreign(self, room: str, state: _Room) -> None:
        """A stale look, a second or more after an epoch was taken for foreign, finds history
        still in ours: that epoch's messages dropped meanwhile will not be handed over (the
        room is back in ours, or they came from a server no longer primary). Told as the epoch
        visited and left, the way a node that had adopted it would have: ours left after what
        was handed over, that one left from its offset 1, and ours resumed where it stood (the
        cursors go on there too). Should history come to be in it after all, it is handed over
        from its offset 1 (nothing twice: members hold none of it)."""
        for epoch in state.foreign:
            self._tell_foreign(room, state, epoch)

    def _tell_foreign(self, room: str, state: _Room, epoch: str) -> None:
        if state.foreign[epoch] or not state.epoch:
            return
        state.foreign[epoch] = True
        self._lose(
            room, protocol.LOSS_EPOCH_CHANGED, state.epoch, state.last + 1, None, new_epoch=epoch
        )
        self._lose(room, protocol.LOSS_EPOCH_CHANGED, epoch, 1, None, new_epoch=state.epoch)

    def _fill_from_held(self, room: str, state: _Room, first: int) -> None:
        """History starts at ``first``, past the last offset handed over: what lies between
        was trimmed meanwhile. Live messages held during this catch-up may still hold it (the
        history read waited for a command link while the subscriber link went on receiving:
        links re-made one after the other after a failover); only what they lack is lost."""
        found: dict[int, bytes] = {}
        for payload in state.held or ():
            offset, epoch = sequence_of(payload)
            if epoch == state.epoch and state.last < offset < first:
                found.setdefault(offset, payload)
        for offset in sorted(found):
            if offset > state.last + 1:
                self._lose_trimmed(room, state, offset)
            state.last = offset
            self._deliver(room, found[offset])
        if first > state.last + 1:
            self._lose_trimmed(room, state, first)
        if found and state.held is not None:
            taken = {id(payload) for payload in found.values()}
            state.held = [payload for payload in state.held if id(payload) not in taken]

    def _lose_trimmed(self, room: str, state: _Room, upto: int) -> None:
        """Offsets after ``state.last`` and before ``upto``: in no history, in nothing held."""
        missing = upto - state.last - 1
        log.warning(
            "live gap older than the history kept", extra={"room": room, "missing": missing}
        )
        self._lose(room, protocol.LOSS_TOO_OLD, state.epoch, state.last + 1, upto - 1)
        state.last = upto - 1

    def _change_epoch(self, room: str, state: _Room, epoch: str, latest: int) -> None:
        """History is in another epoch than the one we delivered: what came after our last
        offset of the old one is gone with it; the new one is handed over from its start."""
        log.warning(
            "room epoch changed under its members",
            extra={"room": room, "epoch": state.epoch, "new_epoch": epoch},
        )
        self._lose(
            room,
            protocol.LOSS_EPOCH_CHANGED,
            state.epoch,
            state.last + 1,
            None,
            new_epoch=epoch or None,
        )
        _leave(state)
        # Back in an epoch left before (a primary that still held it is primary again): what
        # was handed over in it then must not be handed over again, and members' cursors,
        # told only ``new_epoch``, go on after what they had of it too.
        resumed = state.left.pop(epoch, 0)
        state.foreign.pop(epoch, None)  # nothing of it handed over: from its offset 1
        state.epoch, state.last, state.from_start = epoch, resumed, not epoch
        state.reused = 0
        if epoch in state.forgotten:
            # Left more than _LEFT_EPOCHS_KEPT epochs ago: members hold some of it, this node
            # no longer knows how much. What history holds is told lost, not handed over again.
            del state.forgotten[epoch]
            if latest > 0:
                self._lose(room, protocol.LOSS_TOO_OLD, epoch, 1, latest)
                state.last = latest
        # Its history may end before that (the server back as primary had not replicated the
        # last ones).
        self._lose_reused(room, state, latest)

    def _lose_reused(self, room: str, state: _Room, latest: int) -> None:
        """History of ``state.epoch`` ends at ``latest``: offsets after it, up to the last one
        handed over, are published again, as new messages, which members would drop as
        already delivered (and so does this node). Say so, rather than drop them in silence."""
        if latest >= state.last:
            return
        if state.reused and latest + 1 < state.reused_from:
            # Further back than a look before found it (that look went to a server that held
            # more of the epoch than the primary now does): what lies below is published again.
            self._lose(room, protocol.LOSS_TOO_OLD, state.epoch, latest + 1, state.reused_from - 1)
            state.reused_from = latest + 1
        first = max(latest, state.reused) + 1
        if first <= state.last:
            self._lose(room, protocol.LOSS_TOO_OLD, state.epoch, first, state.last)
            if not state.reused:
                state.reused_from = first
            state.reused = state.last

    def _lose(
        self,
        room: str,
        reason: str,
        epoch: str,
        first: int,
        last: int | None,
        new_epoch: str | None = None,
    ) -> None:
        self.losses += 1
        event = protocol.loss(room, reason, epoch, first, last, new_epoch)
        self._deliver(room, envelope.pack(time.time(), event))

    def _release(self, room: str, state: _Room) -> None:
        state.task = None
        held, state.held = state.held or [], None
        for index, payload in enumerate(held):
            self.receive(room, payload)
            if state.held is not None:  # a new gap: the rest waits behind it, in order
                state.held.extend(held[index + 1 :])
                return

    def _adopt(self, room: str, state: _Room, epoch: str, offset: int, payload: bytes) -> None:
        """The first chat message after a give-up: deliver it, and announce exactly what lies
        between the last message handed over and it (whatever epochs it crosses)."""
        state.adopt_next = False
        if epoch == state.epoch:
            if offset <= state.last:
                self.duplicates += 1
                return
            if offset > state.last + 1:
                self._lose(room, protocol.LOSS_UNAVAILABLE, epoch, state.last + 1, offset - 1)
        elif epoch in state.left or epoch in state.foreign:
            self.stale += 1
            state.adopt_next = True
            self._recheck_stale(room, state)
            return
        else:
            if state.epoch:
                self._lose(
                    room,
                    protocol.LOSS_EPOCH_CHANGED,
                    state.epoch,
                    state.last + 1,
                    None,
                    new_epoch=epoch,
                )
                _leave(state)
            if offset > 1 and (state.epoch or state.from_start):
                self._lose(room, protocol.LOSS_UNAVAILABLE, epoch, 1, offset - 1)
            state.reused = 0
        state.epoch, state.last, state.from_start = epoch, offset, False
        self._deliver(room, payload)

    def _give_up(self, room: str, state: _Room, why: str) -> None:
        self.given_up += 1
        log.warning("live gap not filled", extra={"room": room, "error": why})
        if state.task is not None and state.task is not asyncio.current_task():
            state.task.cancel()
        state.task = None
        held, state.held = state.held or [], None
        # The next chat message is taken as it comes and names the exact range lost (_adopt).
        state.adopt_next = bool(state.epoch or state.from_start)
        for payload in held:
            self.receive(room, payload)
        if state.adopt_next:
            # None was held: say so at once, up to the next message delivered.
            self._lose(room, protocol.LOSS_UNAVAILABLE, state.epoch, state.last + 1, None)

    async def settled(self) -> None:
        """Until no catch-up runs (those that start meanwhile included)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stop(self) -> None:
        for state in self._rooms.values():
            _cancel_stale_look(state)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _ahead_of_history(state: _Room, heard_before: int, end: int) -> bool:
    """Whether releasing the first ``heard_before`` messages held would stop at a gap before a
    message of the room's epoch past ``end``, where a history read sent after it arrived ended
    (so history cannot fill that gap)."""
    last = state.last
    for payload in (state.held or ())[:heard_before]:
        offset, epoch = sequence_of(payload)
        if epoch != state.epoch or offset <= last:
            continue
        if offset > last + 1:
            return offset > end
        last = offset
    return False


def _cancel_stale_look(state: _Room) -> None:
    if state.stale_look is not None:
        state.stale_look.cancel()
        state.stale_look = None


def _leave(state: _Room) -> None:
    """Remember the epoch being left (and where), forgetting the oldest beyond the few kept."""
    if not state.epoch:
        return  # no epoch yet (a room that had none): nothing late can come from it
    _remember_left(state, state.epoch, state.last)


def _remember_left(state: _Room, epoch: str, last: int) -> None:
    state.left.pop(epoch, None)
    state.forgotten.pop(epoch, None)
    state.left[epoch] = last
    while len(state.left) > _LEFT_EPOCHS_KEPT:
        oldest = next(iter(state.left))
        del state.left[oldest]
        state.forgotten[oldest] = None
    while len(state.forgotten) > _FORGOTTEN_EPOCHS_KEPT:
        del state.forgotten[next(iter(state.forgotten))]
