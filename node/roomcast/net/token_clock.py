"""Token lifetimes of every connection on one timer: tell before ``exp``, close after it.

One heap and one loop timer for the whole node, like the heartbeat, instead of a timer per
connection. A refresh does not remove the old entries: each entry carries the token's ``exp``
it was made for, and an entry whose connection closed or holds another token since is skipped.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Final, Generic, Protocol, TypeVar

NOTICE: Final = "notice"
EXPIRE: Final = "expire"


class Tracked(Protocol):
    @property
    def closed(self) -> bool: ...

    @property
    def token_expires(self) -> float | None: ...


C = TypeVar("C", bound=Tracked)


class TokenClock(Generic[C]):
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_due: Callable[[C, str], None],
        notice_before: float,
        leeway: float,
    ) -> None:
        self._loop = loop
        self._on_due = on_due
        self._notice_before = notice_before
        self._leeway = leeway
        # (loop time, tie-breaker, connection, kind, exp the entry was made for)
        self._heap: list[tuple[float, int, C, str, float]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._stale = 0  # entries of closed connections or replaced tokens still in the heap

    def __len__(self) -> int:
        return len(self._heap)

    def track(self, conn: C) -> None:
        """(Re)schedule ``conn``'s notice and close for the token it holds now."""
        expires = conn.token_expires
        if expires is None:
            return
        self._compact()
        offset = self._loop.time() - time.time()  # wall clock (exp) to loop clock
        self._push(expires - self._notice_before + offset, conn, NOTICE, expires)
        # The leeway the handshake allowed for clock skew, so a refreshed token that just
        # passed the handshake's check is not cut off by a clock a few seconds ahead.
        self._push(expires + self._leeway + offset, conn, EXPIRE, expires)

    def forget(self, conn: C) -> None:
        """``conn`` closed, or is about to hold another token: its two entries are stale."""
        if conn.token_expires is not None:
            self._stale += 2

    def _compact(self) -> None:
        # Connections that come and go would otherwise leave their entries for a whole token
        # lifetime: rebuild once most of the heap is stale (amortized O(1) per entry).
        if self._stale < 1024 or self._stale * 2 < len(self._heap):
            return
        self._heap = [e for e in self._heap if not e[2].closed and e[2].token_expires == e[4]]
        heapq.heapify(self._heap)
        self._stale = 0
        self._arm()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._heap.clear()

    def _push(self, when: float, conn: C, kind: str, expires: float) -> None:
        entry = (when, next(self._order), conn, kind, expires)
        heapq.heappush(self._heap, entry)
        if self._heap[0] is entry:  # sooner than what the timer waits for
            self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(self._heap[0][0], self._fire) if self._heap else None

    def _fire(self) -> None:
        self._timer = None
        now = self._loop.time()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, conn, kind, expires = heapq.heappop(heap)
            if not conn.closed and conn.token_expires == expires:
                self._on_due(conn, kind)
            elif self._stale:
                self._stale -= 1
        self._arm()
