"""Which of many like events get a log line (written through the caller's logger).

An event a client can cause at will (a refused handshake) must not cost a log line each: the
node admits 1,000 handshakes a second, and each refusal's line (~180 bytes) made 15 GB of logs
a day out of ten addresses. Every event is still counted in a metric; the log keeps the first
few of each kind, then about one a second, each saying how many like it went unlogged.
"""

from __future__ import annotations

import logging
import time
from typing import Final

# Lines of one kind logged at once, then one per LINES_PER_SECOND.
BURST: Final = 10
LINES_PER_SECOND: Final = 1.0


class LogSampler:
    """A token bucket per kind of event (a few kinds: the caller's keys must be bounded, such as
    error codes), and how many events of each kind went unlogged since its last line."""

    __slots__ = ("_burst", "_kinds", "_rate")

    def __init__(self, lines_per_second: float = LINES_PER_SECOND, burst: int = BURST) -> None:
        self._rate = lines_per_second
        self._burst = float(burst)
        # kind -> [tokens, when they were counted, events unlogged since the last line]
        self._kinds: dict[str, list[float]] = {}

    def admit(self, kind: str, now: float | None = None) -> int | None:
        """None: leave this event unlogged. Otherwise log it, saying how many of its kind were
        left unlogged before it (0 nearly always)."""
        if now is None:
            now = time.monotonic()
        state = self._kinds.get(kind)
        if state is None:
            state = self._kinds[kind] = [self._burst, now, 0.0]
        tokens = min(self._burst, state[0] + (now - state[1]) * self._rate)
        state[1] = now
        if tokens < 1:
            state[0] = tokens
            state[2] += 1
            return None
        state[0] = tokens - 1
        skipped = int(state[2])
        state[2] = 0
        return skipped


def log_sampled(
    sampler: LogSampler,
    kind: str,
    logger: logging.Logger,
    level: int,
    message: str,
    extra: dict[str, object],
) -> None:
    """Log ``message`` if ``sampler`` lets this event of ``kind`` have a line, saying how many of
    its kind went unlogged before it (the caller counts every event in a metric apart)."""
    unlogged = sampler.admit(kind)
    if unlogged is not None:
        logger.log(level, message, extra={**extra, "unlogged_before": unlogged})
