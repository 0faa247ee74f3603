"""Costly parses the parse timer (wire.parse_cost) let through.

A long frame's parse is timed (wire.parse_cost), and one during which a collector pass ran was
let through unjudged, as the pass was taken for another connection's doing. A frame can make
the pass itself: a young-generation pass runs every 20,000 net container allocations
(ROOMCAST_GC_THRESHOLD), and 60 KB of nested brackets under a key written twice build 30,000
lists before the second value drops them, so every such frame's parse ran one and none was
refused. Nested lists are also the costliest structure per byte found: ~4.7 ms of the node's
thread for 60 KB (~75 ns a byte, ~90 times as much plain text), pass included.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.adversarial.bystander import BystanderProbe
from tests.adversarial.rawws import OP_TEXT
from tests.adversarial.rawws import frame as ws_frame
from tests.adversarial.test_redteam16_costly_json import (
    ADDRESSES,
    FRAMES,
    send_costly_bursts,
)

# 60 lists each nesting 500 deep (orjson parses up to 1,024): 30,000 lists, more than a young
# pass's threshold, built in one value and dropped when the key is written again.
NESTED = b"[" * 500 + b"]" * 500
COLLECTING = b'{"type":"nope","id":%d,"a":[' + b",".join([NESTED] * 60) + b'],"a":0}'
# On main: node CPU 0.90-1.39 s for the 270 frames, every one answered unknown_type, a
# bystander at 447 ms p50, 882 ms p99. Refused, as the other shapes of
# test_redteam16_costly_json are: 0.04-0.11 s, as each address's first frame (sometimes its
# second, after the burst's refill) is parsed before it is refused, ~5-12 ms each on a machine
# loaded 5 for 2 cores.
NODE_CPU_S = 0.3


# Escaped brackets in a string (``\u005b``, 6 bytes) were counted as brackets the parsed value
# holds but not as brackets written, so each made up for one dropped list: 7,000 lists nested
# 500 deep under a repeated key and as many escapes (56 KB) parse in ~0.9 ms (~17 ns a byte,
# ~24 times plain text) and were never refused.
ESCAPED = b"[" * 500 + b"]" * 500
HIDDEN = (
    b'{"type":"nope","id":%d,"a":['
    + b",".join([ESCAPED] * 14)
    + b'],"a":0,"p":"'
    + b"\\u005b" * 7_014
    + b'"}'
)


SHAPES = {
    "made-the-collector-run": (COLLECTING, 60),
    "escaped-brackets": (HIDDEN, 70),
}


@pytest.mark.parametrize("shape", list(SHAPES))
async def test_costly_frames_are_refused(cluster: Any, probe: BystanderProbe, shape: str) -> None:
    template, first_source = SHAPES[shape]
    frames = [template % i for i in range(FRAMES)]
    assert all(len(frame) < 64 * 1024 for frame in frames), "within ROOMCAST_MAX_FRAME_BYTES"
    burst = b"".join(ws_frame(OP_TEXT, frame) for frame in frames)
    sent = await send_costly_bursts(cluster.nodes[0], probe, first_source, burst)
    figures = (
        f"{ADDRESSES} addresses x {FRAMES} frames of {len(frames[0])} bytes ({shape}): "
        f"{sent.describe()} (bound {NODE_CPU_S} s)"
    )
    print(figures, sent.bystander[0].describe())
    assert "invalid_frame" in sent.codes, figures
    # Not the bystander's round trips: each address's first frame is still parsed before it is
    # refused (~5 ms here, ~1 ms for the other shapes), and six or twelve of them at once on a
    # machine loaded 5 for 2 cores put its p99 at 79-232 ms (on main 647-882 ms and more).
    assert sent.node_cpu_s < NODE_CPU_S, figures
