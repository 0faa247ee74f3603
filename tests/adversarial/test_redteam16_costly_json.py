"""Red team 16: frames of valid JSON that are costly to parse.

A client's received bytes are bounded (1.5 MiB/s, 3 MiB at once, each frame its payload + 1
KiB: docs/security.md) on the grounds that parsing and handling scale with bytes. They do for
text: a 60 KB message parses in ~30 us. They do not for structure: 60 KB of empty arrays in a
field the protocol ignores (``"pad": [[],[],...]``, 20,000 lists) make orjson build and free
20,000 Python objects, ~4 ms of the node's one thread, ~150 times a message of the same size.
Every frame is parsed before any command's own limit is looked at.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.adversarial.bystander import BystanderProbe
from tests.adversarial.observe import cpu_seconds
from tests.adversarial.rawws import OP_TEXT, RawWebSocket
from tests.adversarial.rawws import frame as ws_frame

# Loopback addresses, one connection each: each address's received-bytes burst (3 MiB) takes
# FRAMES frames of ~60 KB at once, within its connection's frame burst (100).
ADDRESSES = 6
FRAMES = 45
# ~60 KB of JSON: an unknown field holding 20,000 empty arrays.
PAD = b"[" + b",".join([b"[]"] * 20_000) + b"]"
# The same burst with a 60 KB string in place of the arrays: node CPU 0.03 s. On main, the
# arrays: 0.29-0.42 s, a bystander on the node at 203 ms p50, 402 ms p99.
NODE_CPU_S = 0.15


def costly_frame(request_id: int, top_level: bool = False) -> bytes:
    """The arrays in an unknown field, or (``top_level``) the frame itself: refused as not an
    object, but only once parsed, and that refusal charged nothing before breakrt17."""
    payload = PAD if top_level else b'{"type":"nope","id":%d,"pad":%s}' % (request_id, PAD)
    assert len(payload) < 64 * 1024, "one frame within ROOMCAST_MAX_FRAME_BYTES"
    return ws_frame(OP_TEXT, payload)


@pytest.mark.parametrize("top_level", [False, True], ids=["in-a-field", "as-the-frame"])
async def test_frames_of_many_empty_arrays_cost_no_more_than_their_bytes(
    cluster: Any, probe: BystanderProbe, top_level: bool
) -> None:
    node = cluster.nodes[0]
    attackers = [
        await RawWebSocket.connect(
            "127.0.0.1", node.port, source=f"127.0.0.{(20 if top_level else 10) + i}"
        )
        for i in range(ADDRESSES)
    ]
    burst = b"".join(costly_frame(i, top_level) for i in range(FRAMES))
    pid = node.process.pid
    try:
        with probe.on(node) as bystander:
            before = cpu_seconds(pid)
            started = time.monotonic()
            for attacker in attackers:
                attacker.send_bytes(burst)
            codes: set[str] = set()
            for attacker in attackers:
                for _ in range(FRAMES):
                    answer = await attacker.next_text(type="error", timeout=60)
                    attacker.received.texts.remove(answer)
                    codes.add(answer["code"])
            took = time.monotonic() - started
            spent = cpu_seconds(pid) - before
        figures = (
            f"{ADDRESSES} addresses x {FRAMES} frames of {len(burst) // FRAMES} bytes (20,000 "
            f"empty arrays {'as the frame' if top_level else 'in an unknown field'}), straight "
            f"to one node: answered {sorted(codes)} "
            f"in {took:.2f} s, node CPU {spent:.2f} s (bound {NODE_CPU_S} s)"
        )
        print(figures, bystander[0].describe())
        assert spent < NODE_CPU_S, figures
        assert "invalid_frame" in codes, figures
        BystanderProbe.assert_fast(bystander, "frames of many empty arrays")
    finally:
        for attacker in attackers:
            await attacker.close()


async def test_a_long_message_of_brackets_and_commas_is_still_sent(cluster: Any) -> None:
    """Only JSON structure is counted, never what a string holds: a 60 KB message of code (a
    legal one, brackets and commas in its text) is acknowledged and delivered, and so is a frame
    with a few small fields the node does not know."""
    node = cluster.nodes[0]
    sender = await RawWebSocket.connect("127.0.0.1", node.port, source="127.0.0.30")
    reader = await RawWebSocket.connect("127.0.0.1", node.port, source="127.0.0.31")
    try:
        for ws, name in ((sender, "coder"), (reader, "reviewer")):
            await ws.send({"type": "join", "room": "code-review", "username": name, "id": 0})
            await ws.next_text(type="joined", timeout=10)
        text = "[[], {}, [1, 2], {'a': [3]}], " * 2_000
        extra = {"client": {"version": [1, 2, 3], "tags": ["a", "b"]}}
        await sender.send({"type": "message", "text": text, "id": 1, **extra})
        ack = await sender.next_text(type="ack", timeout=10)
        delivered = await reader.next_text(type="message", timeout=10)
        assert ack["id"] == 1
        assert delivered["text"] == text
    finally:
        await sender.close()
        await reader.close()
