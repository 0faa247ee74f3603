"""Room history read page by page, each page only when the client took the previous one.

A ``history`` answer, a catch-up and an event-stream resume may be larger than the send bound
(``ROOMCAST_HISTORY_BYTES`` is not bounded by it): they are never built whole. Each page is read
from Redis by offset range (``Broker.history_page``) when the writer asks for it, that is once the
client's socket drained, so a client that does not read pins at most one page plus its send
bound, however large the room's history.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

from roomcast.broker import Broker, HistoryPage

# Messages asked for per page; the page's bytes are its real bound.
PAGE_MESSAGES: Final = 1000


class HistoryGone(Exception):
    """History no longer holds what was being read (trimmed by newer messages, expired, or the
    room's epoch changed): the answer cannot be completed; the client asks again."""


async def first_page(
    broker: Broker, room: str, limit: int, size: int, *, total: bool = True
) -> HistoryPage:
    """The first page of the last ``limit`` messages history holds: its ``offset`` is where the
    answer ends, its ``after`` where it starts, its ``total`` the bytes of those messages (0
    unless ``total``: counting them reads every one of them in Redis, which only an answer that
    must announce its length, a WebSocket frame, needs)."""
    return await broker.history_page(
        room, -max(1, limit), min(limit, PAGE_MESSAGES), size, total=total
    )


def answer_bytes(page: HistoryPage, head: bytes, tail: bytes) -> int:
    """The size of ``head + b",".join(messages) + tail`` for every message after the first
    page's ``after`` (so a large answer can go in one frame of known length)."""
    count = page.offset - page.after
    return len(head) + page.total + max(count - 1, 0) + len(tail)


def complete(page: HistoryPage) -> bool:
    """The page holds everything up to the room's latest offset."""
    return page.after + len(page.messages) >= page.offset


async def pages_after(
    broker: Broker, room: str, epoch: str, after: int, until: int, size: int
) -> AsyncIterator[list[bytes]]:
    """The messages of offsets ``after + 1 .. until``, a page at a time, oldest first; raises
    HistoryGone when history stopped holding them."""
    while after < until:
        page = await broker.history_page(room, after, min(until - after, PAGE_MESSAGES), size)
        if page.epoch != epoch or not page.messages:
            raise HistoryGone(f"history of {room!r} no longer holds offset {after + 1}")
        yield page.messages
        after += len(page.messages)
