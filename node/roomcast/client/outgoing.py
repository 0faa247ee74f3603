"""Messages given to ``send``: queued while offline, written once, confirmed by their echo.

Each message goes out with the client's ``id`` for it; the server's ``ack`` names its offset (or
an ``error`` with that id refuses it), so the echo that confirms it is known exactly, never
guessed from its text. Only a message written on an earlier connection, whose ack was lost with
it, is matched by text in the replay a resume brings.

A message is written at most once (resending one whose fate is unknown could duplicate it); one
never written is kept, in order, until a connection has its room joined, and given up (with a
``SendFailed``) when the queue is full, when it waited too long, or when the client stops.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from roomcast.client.events import Ack, ChatMessage, Error, SendFailed

# Own echoes held until their ack comes (the two travel different paths and may cross).
MAX_EARLY_ECHOES = 1000


class SendError(Exception):
    def __init__(self, failure: SendFailed) -> None:
        super().__init__(f"message to {failure.room!r} not delivered: {failure.reason}")
        self.failure = failure


class SendUnconfirmed(SendError):
    """The message's fate is unknown: it may or may not have been delivered (the server said
    ``unconfirmed``, or the connection died before its answer and the resume did not bring it
    back). Sending it again could duplicate it."""

    def __init__(self, failure: SendFailed) -> None:
        Exception.__init__(self, f"message to {failure.room!r} may or may not have been delivered")
        self.failure = failure


UNCONFIRMED = "unconfirmed"  # SendFailed.reason for both (the server's error code too)


@dataclass(eq=False)
class Outgoing:
    """A handle on one sent message: ``await outgoing.wait()`` gives its echo, with offset."""

    id: int
    room: str
    text: str
    queued_at: float = field(default_factory=time.monotonic)
    written_on: int | None = None  # serial of the connection it was written to
    written_at: float | None = None
    acked_offset: int | None = None  # the offset the server's ack gave it
    outcome: asyncio.Future[ChatMessage | SendFailed] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    @property
    def done(self) -> bool:
        return self.outcome.done()

    async def wait(self) -> ChatMessage:
        """The message as delivered; raises ``SendError`` when it was given up."""
        result = await asyncio.shield(self.outcome)
        if isinstance(result, SendFailed):
            raise (SendUnconfirmed if result.reason == UNCONFIRMED else SendError)(result)
        return result

    def resolve(self, message: ChatMessage) -> None:
        if not self.outcome.done():
            self.outcome.set_result(message)

    def fail(self, reason: str) -> SendFailed:
        failure = SendFailed(self.room, self.text, reason, self.id)
        if not self.outcome.done():
            self.outcome.set_result(failure)
        return failure


class SendBook:
    """The messages not yet written (per room, in order) and those written but not echoed."""

    def __init__(self, max_unsent: int, queue_timeout: float, confirm_timeout: float) -> None:
        self.max_unsent = max_unsent
        self.queue_timeout = queue_timeout
        self.confirm_timeout = confirm_timeout
        self._unsent: dict[str, deque[Outgoing]] = {}
        self._in_flight: dict[str, deque[Outgoing]] = {}
        self._unsent_count = 0
        self._early_echoes: dict[tuple[str, int], ChatMessage] = {}

    @property
    def unsent_count(self) -> int:
        return self._unsent_count

    @property
    def in_flight_count(self) -> int:
        return sum(len(queue) for queue in self._in_flight.values())

    def pending(self) -> list[Outgoing]:
        queues = [*self._unsent.values(), *self._in_flight.values()]
        return [outgoing for queue in queues for outgoing in queue]

    def queue(self, outgoing: Outgoing) -> SendFailed | None:
        if self._unsent_count >= self.max_unsent:
            return outgoing.fail("queue_full")
        self._unsent.setdefault(outgoing.room, deque()).append(outgoing)
        self._unsent_count += 1
        return None

    def has_unsent(self, room: str) -> bool:
        return bool(self._unsent.get(room))

    def take_unsent(self, room: str) -> list[Outgoing]:
        taken = list(self._unsent.pop(room, ()))
        self._unsent_count -= len(taken)
        return taken

    def put_back(self, room: str, outgoing: Iterable[Outgoing]) -> None:
        """Return messages that were never written, ahead of the ones queued since."""
        back = [o for o in outgoing if not o.done]
        if back:
            queue = self._unsent.setdefault(room, deque())
            queue.extendleft(reversed(back))
            self._unsent_count += len(back)

    def written(self, outgoing: Outgoing, link: int) -> None:
        outgoing.written_on, outgoing.written_at = link, time.monotonic()
        self._in_flight.setdefault(outgoing.room, deque()).append(outgoing)

    def confirm(self, message: ChatMessage, link: int) -> Outgoing | None:
        """The message in flight that ``message`` (sent under our name) is the echo of."""
        queue = self._in_flight.get(message.room)
        if not queue:
            return None
        for outgoing in queue:
            if outgoing.acked_offset == message.offset:
                return self._resolve(queue, outgoing, message)
        for outgoing in queue:
            # Written on a connection that is gone: its ack may never come; the resume's
            # replay brings the echo, and the text is all there is to go by.
            stale = outgoing.written_on is not None and outgoing.written_on < link
            if stale and outgoing.acked_offset is None and outgoing.text == message.text:
                return self._resolve(queue, outgoing, message)
        awaiting_ack = any(o.written_on == link and o.acked_offset is None for o in queue)
        if awaiting_ack and len(self._early_echoes) < MAX_EARLY_ECHOES:
            self._early_echoes[(message.room, message.offset)] = message
        return None

    def acknowledge(self, ack: Ack) -> Outgoing | None:
        """The server published our message ``ack.id`` at ``ack.offset``."""
        queue = self._in_flight.get(ack.room)
        outgoing = _by_id(queue, ack.id)
        if queue is None or outgoing is None:
            return None
        outgoing.acked_offset = ack.offset
        echo = self._early_echoes.pop((ack.room, ack.offset), None)
        return self._resolve(queue, outgoing, echo) if echo is not None else None

    def refuse(self, error: Error) -> SendFailed | None:
        """The server refused our message ``error.id`` (unavailable, rate_limited, ...)."""
        for room, queue in self._in_flight.items():
            outgoing = _by_id(queue, error.id)
            if outgoing is not None:
                queue.remove(outgoing)
                self._forget_echoes(room)
                return outgoing.fail(error.code)
        return None

    def _resolve(
        self, queue: deque[Outgoing], outgoing: Outgoing, message: ChatMessage
    ) -> Outgoing:
        queue.remove(outgoing)
        outgoing.resolve(message)
        self._forget_echoes(message.room)
        return outgoing

    def _forget_echoes(self, room: str) -> None:
        if not self._in_flight.get(room):
            for key in [k for k in self._early_echoes if k[0] == room]:
                del self._early_echoes[key]

    def settle_before(self, room: str, link: int) -> list[SendFailed]:
        """Messages written on an earlier connection whose echo a resume did not bring back."""
        queue = self._in_flight.get(room)
        if not queue:
            return []
        stale = [o for o in queue if o.written_on is not None and o.written_on < link]
        for outgoing in stale:
            queue.remove(outgoing)
        return [o.fail(UNCONFIRMED) for o in stale]

    def expire(self, now: float) -> list[SendFailed]:
        failures: list[SendFailed] = []
        for queue in self._unsent.values():
            while queue and now - queue[0].queued_at >= self.queue_timeout:
                failures.append(queue.popleft().fail("expired"))
                self._unsent_count -= 1
        for queue in self._in_flight.values():
            while queue and now - (queue[0].written_at or now) >= self.confirm_timeout:
                failures.append(queue.popleft().fail(UNCONFIRMED))
        return failures

    def drop_room(self, room: str, reason: str) -> list[SendFailed]:
        unsent = self.take_unsent(room)
        in_flight = list(self._in_flight.pop(room, ()))
        return [o.fail(reason) for o in unsent] + [o.fail(UNCONFIRMED) for o in in_flight]

    def drop_room_echoes(self, room: str) -> None:
        self._forget_echoes(room)

    def fail_all(self, reason: str) -> list[SendFailed]:
        failures: list[SendFailed] = []
        for room in list(self._unsent.keys() | self._in_flight.keys()):
            failures.extend(self.drop_room(room, reason))
        return failures


def _by_id(queue: deque[Outgoing] | None, request_id: str | int | None) -> Outgoing | None:
    if queue is None or request_id is None:
        return None
    for outgoing in queue:
        if outgoing.id == request_id:
            return outgoing
    return None
