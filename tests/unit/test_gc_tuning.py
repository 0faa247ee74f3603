"""The node's collector settings, checked in a fresh interpreter (they are process-wide)."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import gc, json
from roomcast.runtime.gc_tuning import tune_collector
before_threshold, before_frozen = gc.get_threshold(), gc.get_freeze_count()
tune_collector(12345)
print(json.dumps([before_threshold, before_frozen, gc.get_threshold(), gc.get_freeze_count()]))
"""


def test_tune_collector_freezes_start_up_objects_and_raises_only_the_young_threshold() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    before, frozen_before, after, frozen_after = json.loads(out)
    assert frozen_before == 0
    assert frozen_after > 1000  # the imported modules' objects
    assert after == [12345, before[1], before[2]]


def test_every_collection_pause_is_timed_by_generation() -> None:
    import gc

    from prometheus_client import CollectorRegistry

    from roomcast.runtime.gc_tuning import watch_pauses
    from roomcast.runtime.metrics import Metrics

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    callback = watch_pauses(metrics.observe_gc_pause)
    try:
        cycles: list[list[object]] = [[] for _ in range(10_000)]
        for cycle in cycles:
            cycle.append(cycle)  # reference cycles, so the full pass has work
        del cycles
        gc.collect(2)
        gc.collect(0)
    finally:
        gc.callbacks.remove(callback)
    full = registry.get_sample_value("roomcast_gc_pause_seconds_count", {"generation": "2"})
    young = registry.get_sample_value("roomcast_gc_pause_seconds_count", {"generation": "0"})
    assert full is not None and full >= 1
    assert young is not None and young >= 1
    longest = registry.get_sample_value("roomcast_gc_pause_max_seconds", {"generation": "2"})
    total = registry.get_sample_value("roomcast_gc_pause_seconds_sum", {"generation": "2"})
    assert longest is not None and total is not None
    assert 0 < longest <= total
