"""How many JSON values a parsed client frame holds, counted only up to a bound. No I/O here.

A client's received bytes are budgeted because parsing scales with bytes. It does for text
(a 60 KB message parses in ~30 us) but not for structure: 60 KB of empty arrays, 20,000 of them,
make the parser build and free 20,000 objects, ~4 ms, some 150 times as long. Every command of
the protocol holds a dozen values or fewer, so a frame with many more is refused, and its
client charged for what it cost (roomcast.core.node).
"""

from __future__ import annotations

from typing import Any, Final

# The values (object members and array items, at any depth) a frame may hold: a join with
# `since`, an `id` and every optional field holds 9; the rest is room for fields that clients
# add and the node ignores.
MAX_FRAME_VALUES: Final = 64
# Frames no longer than this are not counted (the hot path: nearly every frame is short). The
# most values they can hold (~160 empty arrays: a 503-character frame of them parses in 10-15
# us, as much text in 4-7 us) are within the per-frame cost that FRAME_OVERHEAD_BYTES charges.
COUNTED_FROM_CHARS: Final = 512


def holds_too_many_values(data: Any, bound: int = MAX_FRAME_VALUES) -> bool:
    """Whether a parsed frame holds more than ``bound`` values (asked only of frames longer
    than COUNTED_FROM_CHARS; an HTTP API body's bound may be larger: a broadcast names up to
    100 rooms). Asked before the frame is found to be an object or not: an array of 20,000
    empty arrays costs as much to parse as an object holding them, and is refused as late.
    Stops as soon as the count is past the bound, so its cost is bounded too."""
    count = 0
    pending: list[Any] = [data]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            count += len(value)
            if count > bound:
                return True
            pending.extend(value.values())
        elif isinstance(value, list):
            count += len(value)
            if count > bound:
                return True
            pending.extend(value)
    return False
