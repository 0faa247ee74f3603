"""Imported at start-up by a Python process that has this directory first on ``PYTHONPATH``: its
wall clock (``time.time``, ``time.time_ns``) runs ``FAULT_CLOCK_SKEW_S`` seconds off, as on a
host whose clock is wrong (NTP not synchronised, a VM restored from a snapshot). Monotonic
clocks are left alone, as a stepped wall clock leaves them."""

from __future__ import annotations

import os
import time

_SKEW_S = float(os.environ.get("FAULT_CLOCK_SKEW_S", "0"))

if _SKEW_S:
    _time, _time_ns = time.time, time.time_ns

    def _skewed_time() -> float:
        return _time() + _SKEW_S

    def _skewed_time_ns() -> int:
        return _time_ns() + int(_SKEW_S * 1e9)

    time.time = _skewed_time
    time.time_ns = _skewed_time_ns
