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
        "memory is bounded (node +0.4..0.9 MiB for 40 unread 2 MiB answers), but a bystander on "
        "the node saw p99 866 ms (bound 100 ms) while the 40 streamed answers were paged: the "
        "cause is not found yet (py-spy: ~1 s of node CPU in SendBuffer.write, the Redis read "
        "loop and the API's serve path)"
    ),
    "tests/adversarial/test_unread_answers.py::"
    "test_unread_answers_on_one_node_pin_at_most_the_bound[events]": (
        "the event-stream variant (40 SSE resumes never read, on a room two writers burst into) "
        "does not complete: pytest's 120 s timeout, twice in a row on a quiet machine since "
        "answers and resumes are streamed page by page; where it waits is not found yet"
    ),
    "tests/integration/test_attack_send_bound.py::"
    "test_unread_answers_through_nginx_pin_little_kernel_memory": (
        "40 unread history answers of up to 2 MiB through nginx pin 35 MB of kernel socket "
        "memory (the test's bound, set for 256 KiB answers, is 16 MB): the node's own memory is "
        "bounded, the node->nginx->client socket chain is not yet"
    ),
}
