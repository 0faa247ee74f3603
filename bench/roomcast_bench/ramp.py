"""The ramp's search for the highest sustainable rate: geometric steps, then a bisection.

The geometric steps (``Plan.ramp_rates``) are 20-100 % apart, so the last one sustained may sit
up to a step below the true limit. Once a step fails, the search bisects between the last rate
sustained and the first that was not (geometric midpoints: the steps and the resolution are
ratios) until the two are within ``resolution`` of each other or ``max_bisections`` extra steps
were run. The pass/fail rule itself is the caller's (scenarios.RAMP_MAX_P99_MS, RAMP_MAX_LOSS).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

RAMP = "ramp"
BISECT = "bisect"


@dataclass
class RampSearch:
    """Which rate to try next, from the outcome of each rate tried so far."""

    rates: tuple[float, ...]
    resolution: float = 0.05  # done once first_fail / last_pass <= 1 + resolution
    max_bisections: int = 4
    last_pass: float | None = None
    first_fail: float | None = None
    bisections: int = 0
    _next_index: int = field(default=0, repr=False)

    @property
    def phase(self) -> str:
        """``ramp`` while no step failed, then ``bisect``."""
        return RAMP if self.first_fail is None else BISECT

    def next_rate(self) -> float | None:
        """The next target rate, or None when the search is over."""
        if self.first_fail is None:
            if self._next_index < len(self.rates):
                return self.rates[self._next_index]
            return None  # every rate sustained: no upper bound
        if self.last_pass is None:
            return None  # the first rate failed: nothing to bisect from
        if self.first_fail <= self.last_pass * (1 + self.resolution):
            return None
        if self.bisections >= self.max_bisections:
            return None
        # Rounded to whole deliveries/s, and kept strictly inside the bracket.
        middle = round(math.sqrt(self.last_pass * self.first_fail))
        if not self.last_pass < middle < self.first_fail:
            return None
        return float(middle)

    def record(self, rate: float, sustained: bool) -> None:
        """The outcome of a step at ``rate`` (the rate :meth:`next_rate` returned)."""
        if self.first_fail is None:
            self._next_index += 1
        else:
            self.bisections += 1
        if sustained:
            # A rate below one already sustained can only pass in a noisy run; the bracket keeps
            # the highest rate sustained.
            self.last_pass = max(rate, self.last_pass or 0.0)
        elif self.first_fail is None or rate < self.first_fail:
            self.first_fail = rate

    def bracket_ratio(self) -> float | None:
        """first_fail / last_pass: how far apart the bounds of the true limit are."""
        if self.last_pass is None or self.first_fail is None:
            return None
        return self.first_fail / self.last_pass
