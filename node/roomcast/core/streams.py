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

import orjson

from roomcast.broker import Broker
from roomcast.wire import api, sse
from roomcast.wire.codes import RecoveryStatus
from roomcast.wire.envelope import Envelope
from roomcast.wire.recovery import EPOCH_CHANGED, NOT_REQUESTED, RECOVERED, TOO_OLD

# Live events held for one opening stream during its history round trip.
BUFFER_LIMIT: Final = 10_000


class StreamSink(Protocol):
    """The transport side of a stream (also an outbox entry: ``pending`` + ``write_pending``)."""

    id: str
    pending: list[bytes]

    @property
    def closed(self) -> bool: ...

    def write_pending(self) -> int: ...


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
    ) -> None:
        self._history_size = history_size
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
        return room in self._live or room in self._opening

    @property
    def count(self) -> int:
        return self._count

    def deliver(self, room: str, event: Envelope) -> None:
        """A room event from the broker (called only for rooms with streams)."""
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

    def heartbeat(self) -> None:
        assert self.outbox is not None
        for sinks in self._live.values():
            for sink in sinks:
                self.outbox.push(sink, sse.HEARTBEAT)

    async def open(
        self, sink: StreamSink, room: str, since: int | None, epoch: str | None
    ) -> StreamStart:
        """Start ``sink`` on ``room``; raises BrokerUnavailable (nothing sent, nothing kept)."""
        assert self.broker is not None and self.outbox is not None
        self._opening.setdefault(room, {})[sink] = opening = _Opening()
        self._count += 1
        self._on_streams_changed(self._count)
        try:
            await self.broker.subscribe(room)
            # Without a resume point only the room's epoch and latest offset are needed.
            reply = await self.broker.history(room, 1 if since is None else self._history_size)
        except BaseException:
            self.close(sink, room)
            raise
        if not self._drop_opening(sink, room):
            return StreamStart(reply.epoch, reply.offset, None, 0)  # closed meanwhile
        if sink.closed:
            self._count -= 1
            self._on_streams_changed(self._count)
            self._release(room)
            return StreamStart(reply.epoch, reply.offset, None, 0)
        latest = reply.offset
        missed: list[tuple[int, bytes]] = []
        if since is None:
            status = NOT_REQUESTED
        elif (epoch is not None and epoch != reply.epoch) or since > latest:
            status = EPOCH_CHANGED
        else:
            kept = [(_offset_of(m), m) for m in reply.messages]
            missed = [(o, m) for o, m in kept if o > since]
            first = missed[0][0] if missed else latest + 1
            status = RECOVERED if first == since + 1 else TOO_OLD
            if status != RECOVERED:
                missed = []
        if opening.overflowed:
            # The room outran the buffer during one round trip: say so rather than skip events.
            status, missed = RecoveryStatus.OVERLOADED, []
        recovered = None if since is None else status == RECOVERED
        reason = None if since is None or status == RECOVERED else status
        push = self.outbox.push
        push(sink, sse.event(api.stream_opened(room, reply.epoch, latest, recovered, reason)))
        for offset, message in missed:
            push(sink, sse.event(message, offset))
        sent = len(missed)
        if not opening.overflowed:
            for event in opening.held:
                if event.offset == 0 or event.offset > latest:
                    push(sink, sse.event(event.event, event.offset))
                    sent += 1
        self._live.setdefault(room, {})[sink] = None
        return StreamStart(reply.epoch, latest, status, sent)

    def close(self, sink: StreamSink, room: str) -> None:
        """The stream ended (client gone, node draining, or its opening failed)."""
        removed = self._drop_opening(sink, room)
        live = self._live.get(room)
        if live is not None and sink in live:
            del live[sink]
            if not live:
                del self._live[room]
            removed = True
        if removed:
            self._count -= 1
            self._on_streams_changed(self._count)
            self._release(room)

    def sinks(self) -> list[StreamSink]:
        found: list[StreamSink] = []
        for live in self._live.values():
            found.extend(live)
        for opening in self._opening.values():
            found.extend(opening)
        return found

    def _drop_opening(self, sink: StreamSink, room: str) -> bool:
        opening = self._opening.get(room)
        if opening is None or sink not in opening:
            return False
        del opening[sink]
        if not opening:
            del self._opening[room]
        return True

    def _release(self, room: str) -> None:
        if not self.has_room(room) and not self._room_has_members(room):
            assert self.broker is not None
            self.broker.unsubscribe(room)


def _offset_of(message: bytes) -> int:
    value = orjson.loads(message).get("offset")
    return value if isinstance(value, int) else 0
