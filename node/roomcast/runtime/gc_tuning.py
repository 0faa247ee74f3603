"""The cyclic garbage collector, tuned for a process that holds many long-lived connections.

CPython runs a young-generation pass every 700 net allocations of container objects, and every
tenth of those re-walks the older generation, where each open connection's objects live. Under a
connect storm that work is pure overhead: ``perf record -e cpu-clock`` on a node taking 12,000
handshakes put 7.6 % of its CPU in ``gc_collect_main`` and its visitors with the default, 1.1 %
with a young threshold of 20,000 (bench/README.md). Freezing what start-up built (modules,
settings, the metrics registry) keeps those objects out of every later pass.

A full (generation 2) pass walks every tracked object, so its pause grows with the connections a
node holds; ``watch_pauses`` times each pass (``roomcast_gc_pause_seconds``) so a stall shows.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any


def tune_collector(young_threshold: int) -> None:
    """Freeze start-up objects and collect the young generation every ``young_threshold``."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)


def watch_pauses(observe: Callable[[int, float], None]) -> Callable[[str, dict[str, Any]], None]:
    """Call ``observe(generation, seconds)`` after every collection; returns the callback (to
    remove from ``gc.callbacks``)."""
    clock = time.perf_counter
    started = 0.0

    def timed(phase: str, info: dict[str, Any]) -> None:
        nonlocal started
        if phase == "start":
            started = clock()
        else:
            observe(int(info["generation"]), clock() - started)

    gc.callbacks.append(timed)
    return timed
