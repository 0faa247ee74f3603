"""The clocks a long frame's parse is timed with (roomcast.wire.parse_cost): a monotonic clock,
and a count of garbage-collector passes kept by a ``gc.callbacks`` entry.

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
    """The process's parse clock; its collector-pass counter is registered on the first call."""
    passes = [0]

    def count(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop":
            passes[0] += 1

    gc.callbacks.append(count)
    return ParseClock(ns=time.perf_counter_ns, collections=lambda: passes[0])
