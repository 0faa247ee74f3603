"""Messages handed to the broker (or to the publish hook) whose sender has no answer yet.

A draining node waits for their answers before its 1001 close, but only half its drain time:
it must exit within the drain deadline. What is still open then may yet run: a stalled Redis
(SIGSTOP, a long fork) that continues reads what waits in the gone node's socket and runs each
script up to its deadline, and a publish hook's late ``allow`` still publishes. Such a message
cannot go without an answer at the close (a message without one was never published, the
protocol says): :meth:`Unanswered.give_up` hands them over to be answered ``unconfirmed``.
"""

from __future__ import annotations

import asyncio

from roomcast.core.members import Member
from roomcast.wire.protocol import RequestId


class Question:
    """One message whose sender waits for its ack or error. ``settle`` once it was given."""

    __slots__ = ("_book", "conn", "request_id", "room")

    def __init__(self, book: Unanswered, conn: Member, room: str, request_id: RequestId) -> None:
        self._book = book
        self.conn = conn
        self.room = room
        self.request_id = request_id
        book.ask(self)

    def settle(self) -> None:
        """Its answer is queued; again (the answer came after a give-up) it changes nothing."""
        self._book.settle(self)


class Unanswered:
    __slots__ = ("none_open", "open")

    def __init__(self) -> None:
        self.open: set[Question] = set()
        self.none_open: asyncio.Event | None = None  # made by the first wait (in a loop)

    def __len__(self) -> int:
        return len(self.open)

    def ask(self, question: Question) -> None:
        self.open.add(question)
        if self.none_open is not None:
            self.none_open.clear()

    def settle(self, question: Question) -> None:
        self.open.discard(question)
        if not self.open and self.none_open is not None:
            self.none_open.set()

    async def all_settled(self) -> None:
        """Every message asked so far has its answer queued."""
        if self.none_open is None:
            self.none_open = asyncio.Event()
        if not self.open:
            return
        self.none_open.clear()
        await self.none_open.wait()

    def give_up(self) -> list[Question]:
        """Stop waiting: the messages still unanswered, one per sender and request id (a
        message in the publish hook and then in the broker is asked twice), in no order.
        Their answers, if any come later, find their connections closed."""
        seen: set[tuple[Member, RequestId]] = set()
        given_up: list[Question] = []
        for question in self.open:
            key = (question.conn, question.request_id)
            if key not in seen:
                seen.add(key)
                given_up.append(question)
        self.open.clear()
        if self.none_open is not None:
            self.none_open.set()
        return given_up
