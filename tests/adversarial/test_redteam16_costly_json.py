"""Red team 16: frames of valid JSON that are costly to parse.

A client's received bytes are bounded (1.5 MiB/s, 3 MiB at once, each frame its payload + 1
KiB: docs/security.md) on the grounds that parsing and handling scale with bytes. They do for
text: a 60 KB message parses in ~30 us. They do not for structure: 60 KB of empty arrays in a
field the protocol ignores (``"pad": [[],[],...]``, 20,000 lists) make orjson build and free
20,000 Python objects, ~4 ms of the node's one thread, ~150 times a message of the same size.
Every frame is parsed before any command's own limit is looked at.

Repeated keys hid the same arrays from the count of a parsed frame's values: orjson keeps only
the last value of a key written many times, so the 20,000 arrays were built and dropped and the
frame held 3 values. A long frame's parse is now timed as well (wire.parse_cost).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
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


# The same 20,000 arrays under one key written 333 times, 60 arrays each: orjson keeps only the
# last ("a": 0), so the parsed frame holds 3 values and was never counted. On main: node CPU
# 0.33 s, a bystander at 110 ms p50, 272 ms p99.
REPEATED = b"".join([b',"a":[' + b",".join([b"[]"] * 60) + b"]"] * 333) + b',"a":0'
# A number under a key written 9,990 times builds no container and costs nearly as much (~11 ns
# a byte).
SHAPES = {
    "in-a-field": b'{"type":"nope","id":%d,"pad":' + PAD + b"}",
    "as-the-frame": PAD,
    "repeated-keys": b'{"type":"nope","id":%d' + REPEATED + b"}",
    "repeated-scalar-keys": b'{"type":"nope","id":%d' + b',"a":0' * 9_990 + b"}",
}
SOURCES = {"in-a-field": 10, "as-the-frame": 20, "repeated-keys": 40, "repeated-scalar-keys": 50}


def costly_frame(request_id: int, shape: str) -> bytes:
    """The arrays in an unknown field; the frame itself (refused as not an object, but only once
    parsed, and that refusal charged nothing before breakrt17); or under a repeated key."""
    template = SHAPES[shape]
    payload = template % request_id if b"%d" in template else template
    assert len(payload) < 64 * 1024, "one frame within ROOMCAST_MAX_FRAME_BYTES"
    return ws_frame(OP_TEXT, payload)


@pytest.mark.parametrize("shape", list(SHAPES))
async def test_frames_of_many_empty_arrays_cost_no_more_than_their_bytes(
    cluster: Any, probe: BystanderProbe, shape: str
) -> None:
    burst = b"".join(costly_frame(i, shape) for i in range(FRAMES))
    sent = await send_costly_bursts(cluster.nodes[0], probe, SOURCES[shape], burst)
    figures = (
        f"{ADDRESSES} addresses x {FRAMES} frames of {len(burst) // FRAMES} bytes "
        f"({shape}), straight to one node: {sent.describe()} (bound {NODE_CPU_S} s)"
    )
    print(figures, sent.bystander[0].describe())
    assert sent.node_cpu_s < NODE_CPU_S, figures
    assert "invalid_frame" in sent.codes, figures
    BystanderProbe.assert_fast(sent.bystander, "frames of many empty arrays")


@dataclass
class CostlyBursts:
    """What ADDRESSES connections' bursts of FRAMES costly frames each were answered and cost."""

    codes: dict[str, int]
    took_s: float
    node_cpu_s: float
    bystander: Any

    def describe(self) -> str:
        return f"answered {self.codes} in {self.took_s:.2f} s, node CPU {self.node_cpu_s:.2f} s"


async def send_costly_bursts(
    node: Any, probe: BystanderProbe, first_source: int, burst: bytes
) -> CostlyBursts:
    """Send ``burst`` (FRAMES frames) at once from ADDRESSES loopback addresses from
    127.0.0.``first_source`` on, each answered with an error, a bystander probing meanwhile."""
    attackers = [
        await RawWebSocket.connect("127.0.0.1", node.port, source=f"127.0.0.{first_source + i}")
        for i in range(ADDRESSES)
    ]
    pid = node.process.pid
    try:
        with probe.on(node) as bystander:
            before = cpu_seconds(pid)
            started = time.monotonic()
            for attacker in attackers:
                attacker.send_bytes(burst)
            codes: dict[str, int] = {}
            for attacker in attackers:
                for _ in range(FRAMES):
                    answer = await attacker.next_text(type="error", timeout=60)
                    attacker.received.texts.remove(answer)
                    codes[answer["code"]] = codes.get(answer["code"], 0) + 1
            took = time.monotonic() - started
            spent = cpu_seconds(pid) - before
        return CostlyBursts(codes, took, spent, bystander)
    finally:
        for attacker in attackers:
            await attacker.close()


# Long messages that parse slower than plain text, and none of them repeats a key: each is
# acknowledged and delivered (its parse is timed, and time alone refuses nothing).
LEGIT_TEXTS = {
    # code: brackets and commas in its text (~60 KB)
    "code": ("[[], {}, [1, 2], {'a': [3]}], " * 2_000, True),
    # CJK sent as \uXXXX escapes (~60 KB), and the same as UTF-8 (~60 KB)
    "escapes": ("\u4e2d" * 10_000, True),
    "other-scripts": ("\u4e2d" * 20_000, False),
    # emoji as UTF-8 (4 bytes each, ~60 KB)
    "emoji": ("\U0001f600" * 15_000, False),
}
MESSAGES_EACH = 5


@pytest.mark.parametrize("kind", list(LEGIT_TEXTS))
async def test_a_long_legitimate_message_is_still_sent(cluster: Any, kind: str) -> None:
    """Only JSON structure is counted, never what a string holds: a 60 KB message of code (a
    legal one, brackets and commas in its text), of escapes or of other scripts is acknowledged
    and delivered, and so is a frame with a few small fields the node does not know."""
    node = cluster.nodes[0]
    source = 30 + 2 * list(LEGIT_TEXTS).index(kind)
    sender = await RawWebSocket.connect("127.0.0.1", node.port, source=f"127.0.0.{source}")
    reader = await RawWebSocket.connect("127.0.0.1", node.port, source=f"127.0.0.{source + 1}")
    text, ascii_only = LEGIT_TEXTS[kind]
    try:
        for ws, name in ((sender, "coder"), (reader, "reviewer")):
            await ws.send({"type": "join", "room": f"review-{kind}", "username": name, "id": 0})
            await ws.next_text(type="joined", timeout=10)
        extra = {"client": {"version": [1, 2, 3], "tags": ["a", "b"]}}
        for request_id in range(1, MESSAGES_EACH + 1):
            message = {"type": "message", "text": text, "id": request_id, **extra}
            encoded = json.dumps(message, ensure_ascii=ascii_only).encode()
            assert 55_000 < len(encoded) < 64 * 1024, "one frame within ROOMCAST_MAX_FRAME_BYTES"
            sender.send_bytes(ws_frame(OP_TEXT, encoded))
            ack = await sender.next_text(type="ack", id=request_id, timeout=10)
            delivered = await reader.next_text(type="message", timeout=10)
            assert ack["id"] == request_id, ack
            assert delivered["text"] == text
            reader.received.texts.remove(delivered)
    finally:
        await sender.close()
        await reader.close()
