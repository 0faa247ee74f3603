"""Attacks this suite still wins (open findings of issue 15), each with what was measured, and
the failures found too late in stop 12 to fix.

`make test` (and so CI) leaves these out and prints each one with its reason, so the rest of the
suite guards what is fixed; `make test-adversarial` runs them all (ROOMCAST_RUN_OPEN_FINDINGS=1).
An entry is removed the day its attack is defended; nothing else may be added here without a
measured figure and a line in the closing note of the stop that adds it.
"""

from __future__ import annotations

from typing import Final

OPEN_FINDINGS: Final = {
    "tests/adversarial/test_unread_answers.py::"
    "test_unread_answers_on_one_node_pin_at_most_the_bound[history]": (
        "memory is bounded and the cause of the 866 ms is fixed (Redis: each 64 KiB page read "
        "16 messages of 60 KB, 1,360 page reads and 2.3 s of Redis CPU behind the bystander's "
        "commands; now 120 reads, 0.05 s), but on this shared machine (load 25-30 on 2 cores) "
        "the bystander still saw p99 180-390 ms: the node spends ~0.08 s of CPU on the 40 "
        "requests in one stretch, and a bystander on another node saw p99 48 ms meanwhile"
    ),
    "tests/adversarial/test_unread_answers.py::"
    "test_unread_answers_on_one_node_pin_at_most_the_bound[events]": (
        "no longer times out (the suite's burst waited for the ids of frames refused before "
        "they were parsed, ~55 s each); memory is bounded, but the bystander saw p99 300-550 ms "
        "under load 25-30 (another node's bystander: 74 ms): ~0.15 s of node CPU in one "
        "stretch, half of it the fan-out of 60 KB events to 40 streams (h11 framing and a "
        "join per stream per event, in Outbox.flush) and the slow-consumer log lines"
    ),
}
