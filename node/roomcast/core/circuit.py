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

A few clients failing on purpose (five accounts sending what the backend fails on) must not hold
everybody's calls off for long:

- **Probation.** When a success closes the circuit, the clients that had failed are remembered
  for ``probation`` seconds; their failures in that time open the circuit for themselves, never
  count towards everybody. Each outage they cause for everybody costs them new clients.
- **The trial goes to a bystander.** Open for everybody, a suspect may not be the half-open
  trial while a client the circuit did not fail has been refused meanwhile, for one more
  ``reset_after``: a suspect failing every trial on purpose would keep it open for ever. Then a
  suspect may be the trial too, so that a backend that was really down is tried again even when
  only the clients that failed are left calling.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final, Literal

BreakerState = Literal["closed", "open", "half_open"]
CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"
# Clients on probation kept at most (the oldest forgotten first), and suspects at most.
REMEMBERED_CLIENTS: Final = 1024
MAX_SUSPECTS: Final = 64
# Probation lasts this many reset times when not given.
PROBATION_RESETS: Final = 30


class CircuitBreaker:
    __slots__ = (
        "_bystander_refused",
        "_counted",
        "_failures",
        "_on_probation",
        "_opened_at",
        "_probation",
        "_reset_after",
        "_state",
        "_suspects",
        "_threshold",
        "_trial",
        "_unnamed",
    )

    def __init__(self, failures: int, reset_after: float, probation: float | None = None) -> None:
        if failures < 1 or reset_after <= 0:
            raise ValueError("failures >= 1 and reset_after > 0")
        self._threshold = failures
        self._reset_after = reset_after
        self._probation = PROBATION_RESETS * reset_after if probation is None else probation
        self._state: BreakerState = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial = False  # the half-open trial call is in flight
        # The clients of the failures in a row (refused while open), and those of them that
        # count towards everybody (not on probation; at most ``failures`` of them are kept).
        self._suspects: set[str] = set()
        self._counted: set[str] = set()
        self._unnamed = 0  # calls without a client, each a client of its own
        # Client -> when a success last closed a circuit its failures had fed.
        self._on_probation: OrderedDict[str, float] = OrderedDict()
        self._bystander_refused = False  # a non-suspect refused since it opened for everybody

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def for_everybody(self) -> bool:
        """Whether failures of enough different clients came in a row to fail everybody."""
        return len(self._counted) >= self._threshold

    def allow(self, now: float, client: str | None = None) -> bool:
        """May a call start now? In half-open, only the one trial may (record its result).
        A client that is not a suspect may, unless the circuit is open for everybody."""
        if self._state == CLOSED:
            return True
        suspect = client is not None and client in self._suspects
        if not suspect and client is not None and not self.for_everybody:
            return True
        if self._state == OPEN:
            if now - self._opened_at < self._reset_after:
                self._bystander_refused |= not suspect
                return False
            self._state = HALF_OPEN
            self._trial = False
        if self._trial or (suspect and self._trial_kept_for_bystanders(now)):
            self._bystander_refused |= not suspect
            return False
        self._trial = True
        return True

    def succeeded(self, now: float) -> None:
        for client in self._suspects:
            self._on_probation[client] = now
            self._on_probation.move_to_end(client)
        while len(self._on_probation) > REMEMBERED_CLIENTS:
            self._on_probation.popitem(last=False)
        self._state = CLOSED
        self._failures = 0
        self._trial = False
        self._suspects.clear()
        self._counted.clear()
        self._bystander_refused = False

    def failed(self, now: float, client: str | None = None) -> None:
        self._trial = False
        if client is None:
            self._unnamed += 1
            client = f"\0{self._unnamed}"  # no client key starts with NUL
        if len(self._suspects) < MAX_SUSPECTS or client in self._suspects:
            self._suspects.add(client)
            if len(self._counted) < self._threshold and not self._on_probation_at(now, client):
                self._counted.add(client)
        if self._state == HALF_OPEN:
            self._open(now)
            return
        self._failures += 1
        if self._state == CLOSED and self._failures >= self._threshold:
            self._open(now)

    def _on_probation_at(self, now: float, client: str) -> bool:
        since = self._on_probation.get(client)
        return since is not None and now - since < self._probation

    def _trial_kept_for_bystanders(self, now: float) -> bool:
        return (
            self.for_everybody
            and self._bystander_refused
            and now - self._opened_at < 2 * self._reset_after
        )

    def _open(self, now: float) -> None:
        if self._state == CLOSED:
            self._bystander_refused = False
        self._state = OPEN
        self._opened_at = now
        self._failures = 0
