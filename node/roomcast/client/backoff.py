"""Reconnect delays: exponential backoff with full jitter.

Full jitter (a uniform draw between 0 and the exponential bound) spreads the clients of a node
that just died over the whole window, instead of having them all come back at the same instants.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Final

# A Retry-After longer than this is taken as this: a broken or hostile server must not park a
# client for days.
MAX_RETRY_AFTER: Final = 600.0


@dataclass(frozen=True)
class Backoff:
    base: float = 0.5  # bound of the first delay, seconds
    cap: float = 30.0  # no delay is longer
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.cap:
            raise ValueError(f"need 0 < base <= cap, got base={self.base} cap={self.cap}")

    def bound(self, attempt: int) -> float:
        """The largest delay before attempt ``attempt`` (1: the first retry)."""
        if attempt < 1:
            return 0.0
        # min() before the power would overflow for large attempts; 2**60 is plenty.
        return min(self.cap, self.base * 2.0 ** min(attempt - 1, 60))

    def delay(self, attempt: int) -> float:
        return self.rng.uniform(0.0, self.bound(attempt))


def retry_after_seconds(value: str | None) -> float:
    """A ``Retry-After`` header's delay in seconds (delta-seconds form); 0 when absent or not
    a number (an HTTP date is not honoured: clocks differ, and the backoff still applies)."""
    if value is None or not value.strip().isdigit():
        return 0.0
    return min(MAX_RETRY_AFTER, float(int(value.strip())))
