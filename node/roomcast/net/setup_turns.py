"""A time budget, per event-loop turn, for the first reads of new connections (their handshakes).

The event loop hands every socket that became readable together to its protocol in one turn.
When a burst of clients sends its handshakes at once, that turn parses, admits and answers all of
them (~0.2-0.4 ms each) before an established connection's frame, read in the same turn or the
next, is handled: one turn of 685 first reads took 122 ms in red team 18's burst (20 addresses,
60 handshakes each), and a bystander's round trip was 380-744 ms behind such turns.

Here a first read runs at once while the turn has budget left; past it, the connection stops
reading and waits in a queue, drained in later turns with the same budget each, so the loop polls
(and serves the established connections) between every few handshakes. A setup costs ~1 us more
(two clock reads, a call; a turn one ``call_soon``), and one that waits two ``epoll_ctl``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

# ~5-10 handshakes a turn. A member's round trip spans several turns (its read, the Redis write,
# Redis's answer, the write back), each with its budget of setups: with 5 ms a bystander still
# waited 59-115 ms behind 20 addresses' 1,200 handshakes and 56-65 ms behind one address's 400,
# with 2 ms 69-81 ms and 18-41 ms (main: 394-421 ms and 94-112 ms; a machine at load 3). A quiet
# node never reaches it: one setup is far below.
SETUP_BUDGET_PER_TURN = 0.002


class Waiting(Protocol):
    """A new connection whose first read may wait for a later turn."""

    def pause_for_turn(self) -> None:
        """Read nothing more until :meth:`take_turn` (the first read is held here)."""

    def take_turn(self, data: bytes, waited: bool) -> None:
        """Handle the first read now; ``waited``: it was held, and reading may resume."""


class SetupTurns:
    """Runs first reads within :data:`SETUP_BUDGET_PER_TURN` of each loop turn, in their order."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        budget: float = SETUP_BUDGET_PER_TURN,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._loop = loop
        self._budget = budget
        # Not loop.time(): uvloop's is the time the turn started, so it never moves within one.
        self._clock = clock
        self._spent = 0.0  # in the current turn
        self._turn_ending = False  # a callback will start the next turn's budget
        self._waiting: deque[tuple[Waiting, bytes]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def first_read(self, conn: Waiting, data: bytes) -> None:
        if self._waiting or self._spent >= self._budget:
            # Behind those already waiting, so that setups keep their order.
            conn.pause_for_turn()
            self._waiting.append((conn, data))
            self._end_turn_later()
            return
        self._run(conn, data, waited=False)

    def _run(self, conn: Waiting, data: bytes, waited: bool) -> None:
        started = self._clock()
        conn.take_turn(data, waited)
        self._spent += self._clock() - started
        self._end_turn_later()

    def _end_turn_later(self) -> None:
        if not self._turn_ending:
            self._turn_ending = True
            # A callback made now runs after this turn's reads, in the next turn.
            self._loop.call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._turn_ending = False
        self._spent = 0.0
        waiting = self._waiting
        # At least one a turn, whatever the budget: a setup costlier than it still gets its turn.
        while waiting:
            conn, data = waiting.popleft()
            self._run(conn, data, waited=True)
            if self._spent >= self._budget:
                break
