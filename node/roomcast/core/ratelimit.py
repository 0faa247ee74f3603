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

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self.strikes = 0
            return True
        self.strikes += 1
        return False

    @property
    def flooding(self) -> bool:
        # Rejected a whole burst's worth in a row without a single frame getting through:
        # the client ignores our rate_limited errors.
        return self.strikes > self._burst
