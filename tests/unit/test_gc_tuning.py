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
