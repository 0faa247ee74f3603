"""The cyclic garbage collector, tuned for a process that holds many long-lived connections.

CPython runs a young-generation pass every 700 net allocations of container objects, and every
tenth of those re-walks the older generation, where each open connection's objects live. Under a
connect storm that work is pure overhead: ``perf record -e cpu-clock`` on a node taking 12,000
handshakes put 7.6 % of its CPU in ``gc_collect_main`` and its visitors with the default, 1.1 %
with a young threshold of 20,000 (bench/README.md). Freezing what start-up built (modules,
settings, the metrics registry) keeps those objects out of every later pass.
"""

from __future__ import annotations

import gc


def tune_collector(young_threshold: int) -> None:
    """Freeze start-up objects and collect the young generation every ``young_threshold``."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)
