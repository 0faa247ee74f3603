"""Attacks this suite still wins (open findings of issue 15), each with what was measured, and
the failures found too late in stop 12 to fix.

`make test` (and so CI) leaves these out and prints each one with its reason, so the rest of the
suite guards what is fixed; `make test-adversarial` runs them all (ROOMCAST_RUN_OPEN_FINDINGS=1).
An entry is removed the day its attack is defended; nothing else may be added here without a
measured figure and a line in the closing note of the stop that adds it.
"""

from __future__ import annotations

from typing import Final

OPEN_FINDINGS: Final[dict[str, str]] = {}
