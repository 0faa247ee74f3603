"""Token lifetimes of every connection on one timer: tell before ``exp``, close after it.

One heap and one loop timer for the whole node, like the heartbeat, instead of a timer per
connection. A refresh does not remove the old entries: each entry carries the connection's
``token_version`` it was made for, and an entry whose connection closed or took another token
since is skipped. Not the token's ``exp``: a client refreshing with two tokens in turn (exp A,
then B, then A again) brought every entry made for A back to life, so the heap kept one entry
per refresh for a whole token lifetime (10 a second per user and node) and each of them sent
its own ``token_expiring`` when due.
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

    @property
    def token_version(self) -> int:
        """Changes whenever the connection takes a token with another ``exp``."""
        ...


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
        # (loop time, tie-breaker, connection, kind, token_version the entry was made for)
        self._heap: list[tuple[float, int, C, str, int]] = []
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
        version = conn.token_version
        self._push(expires - self._notice_before + offset, conn, NOTICE, version)
        # The leeway the handshake allowed for clock skew, so a refreshed token that just
        # passed the handshake's check is not cut off by a clock a few seconds ahead.
        self._push(expires + self._leeway + offset, conn, EXPIRE, version)

    def forget(self, conn: C) -> None:
        """``conn`` closed, or is about to hold another token: its two entries are stale."""
        if conn.token_expires is not None:
            self._stale += 2

    def _compact(self) -> None:
        # Connections that come and go would otherwise leave their entries for a whole token
        # lifetime: rebuild once most of the heap is stale (amortized O(1) per entry).
        if self._stale < 1024 or self._stale * 2 < len(self._heap):
            return
        self._heap = [e for e in self._heap if _live(e[2], e[4])]
        heapq.heapify(self._heap)
        self._stale = 0
        self._arm()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._heap.clear()

    def _push(self, when: float, conn: C, kind: str, version: int) -> None:
        entry = (when, next(self._order), conn, kind, version)
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
            _, _, conn, kind, version = heapq.heappop(heap)
            if _live(conn, version):
                self._on_due(conn, kind)
            elif self._stale:
                self._stale -= 1
        self._arm()


def _live(conn: Tracked, version: int) -> bool:
    """Whether an entry made for ``version`` of ``conn``'s token is still due."""
    return not conn.closed and conn.token_version == version
