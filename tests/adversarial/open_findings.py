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
    # Red team 5: memory is bounded now (test_silent_readers_..._pin_a_bounded_total); CPU not.
    "tests/adversarial/test_redteam5_many_addresses.py::"
    "test_bystander_keeps_its_round_trip_while_silent_readers_fill": (
        "400 silent WebSockets from 100 addresses in one room, five addresses sending their legal "
        "bursts of 60 KB messages: a bystander on the node at 4.8 s p99 on main (node CPU 0.65 "
        "s), 171-495 ms now (its maximum of ~40 round trips; p50 2 ms; node CPU 0.36-0.42 s), "
        "against 150 ms at factor 3: the kernel copies of the fan-out into 400 sockets (~170 MiB "
        "in one burst) are left"
    ),
}
