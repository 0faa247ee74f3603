"""Token buckets: the per-connection frame flood guard and the message and typing limits."""

from __future__ import annotations

import time


class RateLimiter:
    """Token bucket per connection: ``rate`` frames a second, bursts up to ``burst``."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens", "strikes")

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self.strikes = 0

    def allow(self, cost: float = 1.0) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= cost:
            self._tokens -= cost
            self.strikes = 0
            return True
        self.strikes += 1
        return False

    def strike(self) -> None:
        """A refusal by another bucket (one shared with other connections) counts here too."""
        self.strikes += 1

    @property
    def flooding(self) -> bool:
        # Rejected a whole burst's worth in a row without a single frame getting through:
        # the client ignores our rate_limited errors.
        return self.strikes > self._burst


class BucketPool:
    """Token buckets shared by key (a user, an address, a room) over many connections.

    A key's bucket lives while connections hold it, and a while after (until it would have
    refilled): closing every connection and reconnecting does not buy a fresh burst.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = burst
        self._held: dict[str, tuple[RateLimiter, int]] = {}
        # key -> (bucket, when released), oldest first; kept for one refill time.
        self._idle: dict[str, tuple[RateLimiter, float]] = {}
        self._refill = burst / rate

    def __len__(self) -> int:
        return len(self._held) + len(self._idle)

    def acquire(self, key: str) -> RateLimiter:
        self._prune()
        held = self._held.get(key)
        if held is not None:
            self._held[key] = (held[0], held[1] + 1)
            return held[0]
        idle = self._idle.pop(key, None)
        bucket = idle[0] if idle is not None else RateLimiter(self._rate, self._burst)
        self._held[key] = (bucket, 1)
        return bucket

    def get(self, key: str) -> RateLimiter | None:
        held = self._held.get(key)
        return None if held is None else held[0]

    def release(self, key: str) -> None:
        held = self._held.get(key)
        if held is None:
            return
        if held[1] > 1:
            self._held[key] = (held[0], held[1] - 1)
            return
        del self._held[key]
        self._idle[key] = (held[0], time.monotonic())

    def _prune(self) -> None:
        if not self._idle:
            return
        deadline = time.monotonic() - self._refill
        for key, (_, released) in list(self._idle.items()):
            if released > deadline:
                break  # insertion order is release order
            del self._idle[key]


class ConnectionBudget:
    """What one connection may still do beyond its own frame, message and typing buckets: its
    joins, and the buckets it shares with the other connections of the same client."""

    __slots__ = ("client", "client_joins", "client_messages", "joins")

    def __init__(
        self,
        client: str,
        joins: RateLimiter,
        client_messages: RateLimiter,
        client_joins: RateLimiter,
    ) -> None:
        self.client = client  # "sub:<token subject>" or "ip:<address>"
        self.joins = joins
        self.client_messages = client_messages
        self.client_joins = client_joins
