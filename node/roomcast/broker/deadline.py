"""Deadlines on chat publications, in Redis's own clock (issue 14: ``unavailable`` means not sent).

A node gives up on a publication after its Redis timeout, yet Redis may still run it later: a
stalled (SIGSTOP) or partitioned Redis reads the bytes it was sent once it wakes. So every
publish script carries a deadline in Redis's clock and refuses to run past it; the node says
``unavailable`` only once that deadline (plus the clock estimate's error) is over, when no late
run can happen any more.

:class:`RedisClock` estimates Redis's clock from ``TIME`` replies (sent on every connect and by the
watchdog every half timeout, in place of a ``PING``), Cristian's way: the offset is Redis's time
minus the midpoint of the round trip, wrong by at most half of it.
"""

from __future__ import annotations

import time
from typing import Any, Final

# A held estimate's error grows by this much per second of age (clock drift, 100 ppm: loose
# for NTP-synchronised hosts), so that a fresh sample with a somewhat wider round trip wins.
_DRIFT: Final = 1e-4
# Added to the estimate's error before a lost command is looked up: Redis's TIME inside a script
# is read when the script starts, and the two clocks' ticks are not the same.
SAFETY_MS: Final = 20.0
# Before any sample, the clocks are assumed equal (one host) but not trusted closer than this.
_UNSAMPLED_ERROR_MS: Final = 1000.0


def now_ms() -> float:
    return time.time() * 1000.0


class RedisClock:
    """Redis's clock as this node estimates it: ``redis_ms ≈ local_ms + offset_ms``."""

    __slots__ = ("_at_ms", "error_ms", "offset_ms", "samples")

    def __init__(self) -> None:
        self.offset_ms = 0.0
        self.error_ms = _UNSAMPLED_ERROR_MS
        self._at_ms = 0.0
        self.samples = 0

    def sample(self, sent_ms: float, received_ms: float, reply: Any) -> None:
        """A ``TIME`` reply (``[seconds, microseconds]``) sent at ``sent_ms``, read at
        ``received_ms`` (local wall clock). Kept if it is tighter than the held estimate
        (aged by drift): a sample taken across a stall says little; or if the two cannot both
        be right (a clock stepped)."""
        try:
            redis_ms = int(reply[0]) * 1000.0 + int(reply[1]) / 1000.0
        except (TypeError, ValueError, IndexError):
            return
        error = max(0.0, received_ms - sent_ms) / 2
        # The age is taken either way: a node clock stepped back made it negative, and the held
        # estimate (a minute off after a minute's step) never aged out.
        held = self.error_ms + abs(received_ms - self._at_ms) * _DRIFT
        offset = redis_ms - (sent_ms + received_ms) / 2
        # A sample whose offset the held one cannot explain, even counting both errors, says
        # that one of the two clocks stepped (NTP, a VM restored or migrated, ``date -s``):
        # it is taken however wide its round trip, or the deadlines stay off by the step.
        stepped = abs(offset - self.offset_ms) > held + error
        if self.samples and error > held and not stepped:
            return
        self.offset_ms = offset
        self.error_ms = error
        self._at_ms = received_ms
        self.samples += 1

    def deadline(self, local_ms: float, timeout_ms: float) -> int:
        """Redis time (ms) after which a command sent at ``local_ms`` must not run."""
        return int(local_ms + self.offset_ms + timeout_ms)

    def settled_at(self, deadline_ms: int) -> float:
        """Local wall time (ms) from which Redis surely saw ``deadline_ms`` pass."""
        return deadline_ms - self.offset_ms + self.error_ms + SAFETY_MS
