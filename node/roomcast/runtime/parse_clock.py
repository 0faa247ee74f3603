"""The clocks a long frame's parse is timed with (roomcast.wire.parse_cost): a monotonic clock,
and the time garbage-collector passes took, kept by a ``gc.callbacks`` entry (taken off the
parse a pass interrupted).

Not the thread's CPU clock: reading it is a system call here (~1 us a read, against ~0.1 us for
``perf_counter_ns``), as much as a 1 KB frame's parse. Time the scheduler gives to other
processes may make a parse read slow; that refuses nothing unless the frame's text also shows
values that the parse dropped (parse_cost.dropped_values)."""

from __future__ import annotations

import functools
import gc
import time
from typing import Any

from roomcast.wire.parse_cost import ParseClock


@functools.cache
def parse_clock() -> ParseClock:
    """The process's parse clock; its collector timer is registered on the first call."""
    clock = time.perf_counter_ns
    # [ns taken by finished passes, when the running pass started]
    collecting = [0, 0]

    def timed(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            collecting[1] = clock()
        else:
            collecting[0] += clock() - collecting[1]

    gc.callbacks.append(timed)
    return ParseClock(ns=clock, collecting_ns=lambda: collecting[0])
