"""A circuit breaker for one hook: stop calling a backend that keeps failing, try it again later.

Pure state, the clock passed in: closed (calls go through; failures in a row are counted) →
open after ``failures`` of them (calls fail at once, sparing the node and the backend) →
half-open once ``reset_after`` seconds passed (exactly one trial call) → closed again when the
trial succeeds, open again (for another ``reset_after``) when it fails.

Whose failures they were matters: a backend that fails for one client's input (a message text
its database refuses) is not down. The circuit is open for everybody only once the failures in
a row came from ``failures`` different clients; before that it is open for the clients that
failed (the suspects) alone, and anybody else's calls go through as if it were closed (one of
them succeeding closes it). A call without a client counts as a client of its own.
"""

from __future__ import annotations

from typing import Final, Literal

BreakerState = Literal["closed", "open", "half_open"]
CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"


class CircuitBreaker:
    __slots__ = (
        "_failures",
        "_opened_at",
        "_reset_after",
        "_state",
        "_suspects",
        "_threshold",
        "_trial",
        "_unnamed",
    )

    def __init__(self, failures: int, reset_after: float) -> None:
        if failures < 1 or reset_after <= 0:
            raise ValueError("failures >= 1 and reset_after > 0")
        self._threshold = failures
        self._reset_after = reset_after
        self._state: BreakerState = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial = False  # the half-open trial call is in flight
        # The clients of the failures in a row (at most ``failures`` of them are kept).
        self._suspects: set[str] = set()
        self._unnamed = 0  # calls without a client, each a client of its own

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def for_everybody(self) -> bool:
        """Whether failures of enough different clients came in a row to fail everybody."""
        return len(self._suspects) >= self._threshold

    def allow(self, now: float, client: str | None = None) -> bool:
        """May a call start now? In half-open, only the one trial may (record its result).
        A client that is not a suspect may, unless the circuit is open for everybody."""
        if self._state == CLOSED:
            return True
        if client is not None and client not in self._suspects and not self.for_everybody:
            return True
        if self._state == OPEN:
            if now - self._opened_at < self._reset_after:
                return False
            self._state = HALF_OPEN
            self._trial = False
        if self._trial:
            return False
        self._trial = True
        return True

    def succeeded(self) -> None:
        self._state = CLOSED
        self._failures = 0
        self._trial = False
        self._suspects.clear()

    def failed(self, now: float, client: str | None = None) -> None:
        self._trial = False
        if len(self._suspects) < self._threshold:
            if client is None:
                self._unnamed += 1
                client = f"\0{self._unnamed}"  # no client key starts with NUL
            self._suspects.add(client)
        if self._state == HALF_OPEN:
            self._open(now)
            return
        self._failures += 1
        if self._state == CLOSED and self._failures >= self._threshold:
            self._open(now)

    def _open(self, now: float) -> None:
        self._state = OPEN
        self._opened_at = now
        self._failures = 0
