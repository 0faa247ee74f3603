"""Attacks this suite still wins (open findings of issue 15), each with what was measured, and
the failures found too late in stop 12 to fix.

`make test` (and so CI) leaves these out and prints each one with its reason, so the rest of the
suite guards what is fixed; `make test-adversarial` runs them all (ROOMCAST_RUN_OPEN_FINDINGS=1).
An entry is removed the day its attack is defended; nothing else may be added here without a
measured figure and a line in the closing note of the stop that adds it.
"""

from __future__ import annotations

from typing import Final

OPEN_FINDINGS: Final[dict[str, str]] = {
    # Found by the last clean-clone CI run of stop 21, too late to investigate.
    "tests/adversarial/test_redis_memory.py::test_one_address_cannot_fill_redis": (
        "intermittent: 1 of 3 clean-clone CI runs of stop 21 (and 2 of 3 module runs on a loaded "
        "machine) saw one bystander round trip of 104-160 ms (bound 50 ms x the timeout factor) "
        "among ~22 while 60 connections of one address burst 60 KB messages (142 stored, Redis "
        "+9.4 MiB, within its bound); p50 stays 2-4 ms; the stall's place (node parsing, Redis "
        "scripts) is not found yet"
    ),
}
