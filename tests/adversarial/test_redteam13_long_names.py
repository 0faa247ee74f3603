"""Red team 13: a username of tens of thousands of combining marks.

A join's ``username`` was NFKC-normalized whole, before its length was looked at (the 32
characters are checked on what normalization makes of it). CPython's normalization puts the
marks after a letter in canonical order with an insertion sort (before the fix of CPython
gh-149079; measured on Python 3.11.7): marks of two classes in turn, U+0301 (230) then
U+0316 (220), are its worst case, quadratic in their number. One join frame of ~64 KB of them
(within the frame size and every rate of one connection) held the node's one thread for about
a second; the frame is parsed before the join's own limits or, with tokens on, before the
join's username is known to be ignored. The HTTP API's posts (open mode) took the same path.
On main, six such frames: node CPU 5.86 s, a bystander at 6.9 s p50, 14.2 s p99.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tests.adversarial.bystander import BystanderProbe, node_of
from tests.adversarial.observe import cpu_seconds
from tests.adversarial.rawws import OP_TEXT, RawWebSocket
from tests.adversarial.rawws import frame as ws_frame

# Join frames sent at once: a few, far within the connection's frame rate (50/s, 100 at once)
# and its client's received bytes (3 MiB at once, each frame costing its size + 1 KiB).
FRAMES = 6
# Marks of two canonical combining classes in turn after one letter, ~64 KB of UTF-8 in all.
MARKS = "\u0301\u0316" * 15_000
# The node's CPU for the frames: parsing and refusing six 60 KB frames is milliseconds.
NODE_CPU_S = 0.3


async def test_a_username_of_many_marks_is_refused_before_it_costs(
    cluster: Any, probe: BystanderProbe
) -> None:
    join = {"type": "join", "room": "marks", "username": "a" + MARKS, "id": 1}
    frame = ws_frame(OP_TEXT, json.dumps(join, ensure_ascii=False).encode())  # UTF-8, not \u
    assert len(frame) < 64 * 1024, "one frame within ROOMCAST_MAX_FRAME_BYTES"
    attacker = await RawWebSocket.connect("127.0.0.1", cluster.nginx_port)
    node = node_of(cluster, attacker.welcome["node"])
    pid = node.process.pid
    try:
        with probe.on(node) as bystander:
            before = cpu_seconds(pid)
            started = time.monotonic()
            attacker.send_bytes(frame * FRAMES)
            answers = []
            for _ in range(FRAMES):
                answers.append(await attacker.next_text(type="error", timeout=60))
                attacker.received.texts.remove(answers[-1])
            took = time.monotonic() - started
            spent = cpu_seconds(pid) - before
        codes = sorted({answer["code"] for answer in answers})
        figures = (
            f"{FRAMES} join frames of {len(frame)} bytes (a username of {len(MARKS)} marks) on "
            f"one connection through nginx: answered {codes} in {took:.2f} s, node CPU "
            f"{spent:.2f} s (bound {NODE_CPU_S} s)"
        )
        print(figures, bystander[0].describe())
        assert codes == ["invalid_username"], figures
        assert spent < NODE_CPU_S, figures
        BystanderProbe.assert_fast(bystander, "usernames of many combining marks")
    finally:
        await attacker.close()
