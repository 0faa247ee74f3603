"""One-way room streams (Server-Sent Events): who listens to which room, and resuming them.

A stream is not a member: it is in no presence list and announces nothing. It opens like a
``join`` with ``since``, without the join's marker: the node subscribes (confirmed), buffers the
room's live events, reads the history, then sends the missed messages, then the buffered events
whose offset is past the history read (or that have none), then live ones. Chat messages carry
offsets, so the switch from history to live has no gap and no duplicate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

from roomcast.broker import Broker
from roomcast.core.history_pages import PAGE_MESSAGES
from roomcast.core.node_rooms import NodeRooms
from roomcast.core.rooms import TooManyRoomsError
from roomcast.wire import api, protocol, sse
from roomcast.wire.codes import RecoveryStatus
from roomcast.wire.envelope import Envelope
from roomcast.wire.recovery import EPOCH_CHANGED, NOT_REQUESTED, RECOVERED, TOO_OLD

# Live events held for one opening stream during its history round trip.
BUFFER_LIMIT: Final = 10_000


class StreamSink(Protocol):
    """The transport side of a stream (also an outbox entry: ``pending`` + ``write_pending``)."""

    id: str
    pending: list[bytes]
    subject: str | None  # the token's sub that opened it (None: an API key or an open node)

    @property
    def closed(self) -> bool: ...

    def write_pending(self) -> int: ...

    def end(self) -> None:
        """Finish the stream cleanly (its client resumes from its last event id)."""

    async def drained(self) -> bool:
        """Wait until what was written left the node; False if the stream ended (or did not
        drain in time and was dropped)."""
        ...


class Pusher(Protocol):
    def push(self, conn: StreamSink, frame: bytes) -> None: ...


@dataclass(slots=True)
class _Opening:
    held: list[Envelope] = field(default_factory=list)
    overflowed: bool = False


@dataclass(frozen=True, slots=True)
class StreamStart:
    epoch: str
    offset: int
    status: RecoveryStatus | None  # None: the stream closed before it opened
    sent: int  # events sent before going live


class StreamHub:
    def __init__(
        self,
        history_size: int,
        room_has_members: Callable[[str], bool],
        on_streams_changed: Callable[[int], None],
        page_bytes: int = 256 * 1024,
        node_rooms: NodeRooms | None = None,
    ) -> None:
        self._history_size = history_size
        # The node's rooms within its cap, shared with its WebSocket members: a stream
        # subscribes the node to its room as a join does.
        self._node_rooms = node_rooms if node_rooms is not None else NodeRooms()
        # A resume larger than this is sent a page at a time as the client drains.
        self._page_bytes = page_bytes
        # Streams resuming page by page: no live events until caught up (they are in history).
        self._catching: dict[str, set[StreamSink]] = {}
        # room -> offset of the last chat message seen on its channel (where catching streams
        # must get to before going live)
        self._seen: dict[str, int] = {}
        self._room_has_members = room_has_members
        self._on_streams_changed = on_streams_changed
        self._live: dict[str, dict[StreamSink, None]] = {}
        self._opening: dict[str, dict[StreamSink, _Opening]] = {}
        self._count = 0
        self.broker: Broker | None = None
        self.outbox: Pusher | None = None

    def attach(self, broker: Broker, outbox: Pusher) -> None:
        self.broker = broker
        self.outbox = outbox

    def has_room(self, room: str) -> bool:
        return room in self._live or room in self._opening or room in self._catching

    @property
    def count(self) -> int:
        return self._count

    def refusal_of(self, room: str) -> str | None:
        """Why a stream of ``room`` may not open (None: it may): the node holds its most rooms,
        and not this one."""
        if self.has_room(room) or self._node_rooms.admits(room):
            return None
        return self._node_rooms.refusal()

    def deliver(self, room: str, event: Envelope) -> None:
        """A room event from the broker (called only for rooms with streams)."""
        catching = self._catching.get(room)
        if catching:
            if event.offset:
                self._seen[room] = max(self._seen.get(room, 0), event.offset)
            elif event.event.startswith(protocol.LOSS_PREFIX):
                self._lost_while_catching(catching)
        live = self._live.get(room)
        if live:
            assert self.outbox is not None
            chunk = sse.event(event.event, event.offset)
            push = self.outbox.push
            for sink in live:
                push(sink, chunk)
        opening = self._opening.get(room)
        if opening:
            for state in opening.values():
                if len(state.held) < BUFFER_LIMIT:
                    state.held.append(event)
                else:
                    state.overflowed = True

    def _lost_while_catching(self, catching: set[StreamSink]) -> None:
        """The room lost messages (Redis restarted empty: a new epoch from offset 1; or history
        trimmed) while these streams were read up from history and got no live events, this
        notice included. Reading on by offset, a stream that had read all it was behind would
        go live on the new epoch's offsets as if they followed its old ones. Ended instead: its
        EventSource resumes from its Last-Event-ID and is answered ``recovered: false``."""
        for sink in [*catching]:
            if not sink.closed:
                sink.end()

    def heartbeat(self) -> None:
        assert self.outbox is not None
        for sinks in self._live.values():
            for sink in sinks:
                self.outbox.push(sink, sse.HEARTBEAT)

    async def open(
        self,
        sink: StreamSink,
        room: str,
        since: int | None,
        epoch: str | None,
        overloaded: bool = False,
    ) -> StreamStart:
        """Start ``sink`` on ``room``; raises BrokerUnavailable (nothing sent, nothing kept).
        ``overloaded``: a resume refused by the client's history budget (``since`` is None),
        told so. Raises TooManyRoomsError (nothing kept) when the node may not take the room:
        ask :meth:`refusal_of` before answering."""
        assert self.broker is not None and self.outbox is not None
        self._take(room)
        self._opening.setdefault(room, {})[sink] = opening = _Opening()
        self._counted(1)
        try:
            await self.broker.subscribe(room)
            # Without a resume point only the room's epoch and latest offset are needed; with
            # one, its first page.
            after = -1 if since is None else since
            page = await self.broker.history_page(
                room, after, 0 if since is None else PAGE_MESSAGES, self._page_bytes
            )
            # The ban check before this stream was registered may have been answered after
            # the node handled a ban order (Redis ran the check first), which then found no
            # stream to end: checked again now that orders find it. A ban set after this read
            # runs is ordered after it too, and that order ends the stream.
            subject = sink.subject
            ban = None if subject is None else await self.broker.ban_of(room, subject)
        except BaseException:
            self.close(sink, room)
            raise
        if not self._drop_opening(sink, room):
            return StreamStart(page.epoch, page.offset, None, 0)  # closed meanwhile
        if sink.closed or ban is not None:
            self._counted(-1)
            self._release(room)
            if ban is not None and not sink.closed:
                # As the order would have: the event, then the end (EventSource's retry is
                # then refused 403 banned).
                self.outbox.push(sink, sse.event(protocol.banned(room, ban.reason, ban.until_ms)))
                sink.end()
            return StreamStart(page.epoch, page.offset, None, 0)
        latest = page.offset
        missed = page.messages
        if since is None:
            status, missed = NOT_REQUESTED, []
        elif (epoch is not None and epoch != page.epoch) or since > latest:
            status, missed = EPOCH_CHANGED, []
        elif since == latest or missed:
            status = RECOVERED
        else:
            status = TOO_OLD
        if opening.overflowed or overloaded:
            # The room outran the buffer during one round trip (or the client may not read
            # more history now): say so rather than skip events.
            status, missed = RecoveryStatus.OVERLOADED, []
        resumed = since is not None or overloaded
        recovered = None if not resumed else status == RECOVERED
        reason = None if not resumed or status == RECOVERED else status
        push = self.outbox.push
        push(sink, sse.event(api.stream_opened(room, page.epoch, latest, recovered, reason)))
        sent = 0
        offset = page.after
        for message in missed:
            offset += 1
            push(sink, sse.event(message, offset))
            sent += 1
        if status == RECOVERED and offset < latest:
            # More than a page missed: the rest page by page as the client drains.
            return await self._catch_up(sink, room, page.epoch, offset, latest, opening, sent)
        if not opening.overflowed:
            for event in opening.held:
                if event.offset == 0 or event.offset > latest:
                    push(sink, sse.event(event.event, event.offset))
                    sent += 1
        self._live.setdefault(room, {})[sink] = None
        return StreamStart(page.epoch, latest, status, sent)

    async def _catch_up(
        self,
        sink: StreamSink,
        room: str,
        epoch: str,
        have: int,
        latest: int,
        opening: _Opening,
        sent: int,
    ) -> StreamStart:
        """Send what ``sink`` missed after ``have``, a page each time it drained, then take it
        live in the same loop turn as the last check: no gap, no duplicate. Live events of the
        meantime are not held (chat messages come from history; typing and presence events of
        the meantime are not replayed)."""
        assert self.broker is not None and self.outbox is not None
        self._catching.setdefault(room, set()).add(sink)
        newest = max([latest, *(event.offset for event in opening.held)])
        self._seen[room] = max(self._seen.get(room, 0), newest)
        opening.held.clear()
        live = False
        try:
            while True:
                if not await sink.drained() or sink.closed:
                    return StreamStart(epoch, latest, None, sent)
                target = self._seen.get(room, 0)
                if have >= target:
                    break
                page = await self.broker.history_page(
                    room, have, min(target - have, PAGE_MESSAGES), self._page_bytes
                )
                if sink.closed:
                    return StreamStart(epoch, latest, None, sent)
                if page.epoch != epoch or not page.messages:
                    # History no longer holds what it missed: the stream ends, and its client
                    # resumes from its Last-Event-ID (then learns too_old).
                    sink.end()
                    return StreamStart(epoch, latest, None, sent)
                for message in page.messages:
                    have += 1
                    self.outbox.push(sink, sse.event(message, have))
                    sent += 1
            if sink.closed:
                return StreamStart(epoch, latest, None, sent)
            self._live.setdefault(room, {})[sink] = None
            live = True
            return StreamStart(epoch, latest, RECOVERED, sent)
        finally:
            catching = self._catching.get(room)
            if catching is not None and sink in catching:
                catching.discard(sink)
                if not catching:
                    del self._catching[room]
                    self._seen.pop(room, None)
                if not live:
                    # Ended here (cut short, or its client gone), before its connection's close
                    # reaches close(), which then finds it nowhere: counted out here. Left
                    # counted, the room stayed subscribed and in the node's rooms for good.
                    self._counted(-1)
                    self._release(room)

    def close(self, sink: StreamSink, room: str) -> None:
        """The stream ended (client gone, node draining, or its opening failed)."""
        removed = self._drop_opening(sink, room)
        catching = self._catching.get(room)
        if catching is not None and sink in catching:
            catching.discard(sink)
            if not catching:
                del self._catching[room]
                self._seen.pop(room, None)
            removed = True
        live = self._live.get(room)
        if live is not None and sink in live:
            del live[sink]
            if not live:
                del self._live[room]
            removed = True
        if removed:
            self._counted(-1)
            self._release(room)

    def end_streams_of(self, subject: str, frame: bytes, room: str | None = None) -> int:
        """End the streams ``subject``'s token opened (of ``room``, or every one), each after
        ``frame`` (the order's event, as a WebSocket member gets it); returns how many."""
        assert self.outbox is not None
        rooms = [room] if room is not None else [*{*self._live, *self._opening, *self._catching}]
        ended = 0
        for name in rooms:
            found = [
                *self._live.get(name, ()),
                *self._opening.get(name, ()),
                *self._catching.get(name, ()),
            ]
            for sink in found:
                if sink.subject == subject and not sink.closed:
                    self.outbox.push(sink, sse.event(frame))
                    sink.end()
                    ended += 1
        return ended

    def sinks(self) -> list[StreamSink]:
        found: list[StreamSink] = []
        for live in self._live.values():
            found.extend(live)
        for opening in self._opening.values():
            found.extend(opening)
        for catching in self._catching.values():
            found.extend(catching)
        return found

    def _drop_opening(self, sink: StreamSink, room: str) -> bool:
        opening = self._opening.get(room)
        if opening is None or sink not in opening:
            return False
        del opening[sink]
        if not opening:
            del self._opening[room]
        return True

    def _counted(self, change: int) -> None:
        self._count += change
        self._on_streams_changed(self._count)

    def _take(self, room: str) -> None:
        """Count ``room`` among the node's rooms when the streams did not hold it yet."""
        if not self.has_room(room) and (refusal := self._node_rooms.take(room)) is not None:
            raise TooManyRoomsError(refusal)

    def _release(self, room: str) -> None:
        if self.has_room(room):
            return
        self._node_rooms.release(room)
        if not self._room_has_members(room):
            assert self.broker is not None
            self.broker.unsubscribe(room)
