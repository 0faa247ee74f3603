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
    # Found by the last clean-clone CI run of stop 22, too late to investigate.
    "tests/adversarial/test_large_bursts.py::"
    "test_members_that_read_survive_ten_bursting_connections": (
        "intermittent: in 1 of 4 clean-clone CI runs of stop 22 a bystander's p99 (its maximum: "
        "11 round trips) was 144 ms against 100 ms while ten connections burst 12 MB into its "
        "room; alone, 2 of 4 runs over 50 ms (65-74 ms), also without the attacker pinned; "
        "whether the nodes' own work (1.2 MB frames) or scheduling holds it is not found yet"
    ),
}
