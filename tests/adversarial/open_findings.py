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
    "tests/adversarial/test_redteam_sse_epoch.py::"
    "test_event_stream_resumed_after_redis_restarted_empty_is_told_or_gets_everything": (
        "an EventSource resuming with Last-Event-ID 3 after Redis restarted empty, the room's "
        "new epoch holding 5 messages, is answered recovered:true and gets offsets 4-5 only: "
        "1-3 of the new epoch silently skipped (the SSE id is a bare offset; needs the epoch "
        "in the id, core/streams.py and wire/sse.py)"
    ),
}
