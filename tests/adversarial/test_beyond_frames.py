"""Beyond the issue: frames and JSON a compliant library never sends. Each must end in the
documented answer (an error frame, or a close with a documented code), counted, without a
traceback on the node, and the node must keep serving a bystander."""

from __future__ import annotations

import struct
import uuid
from typing import Any

import pytest

from tests.adversarial.bursts import join
from tests.adversarial.observe import documented_close_codes
from tests.adversarial.rawws import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_TEXT,
    RawWebSocket,
    frame,
)

# Protocol violations (RFC 6455) and what the node must answer: 1002 protocol error is
# websockets' own answer; the README must list every code the node sends.
BAD_FRAMES: dict[str, tuple[bytes, set[int]]] = {
    "unmasked client frame": (frame(OP_TEXT, b'{"type":"presence"}', mask=False), {1002}),
    "reserved bit set": (frame(OP_TEXT, b"{}", rsv=0b100), {1002}),
    "unknown opcode 0x3": (frame(0x3, b""), {1002}),
    "close code 999": (frame(OP_CLOSE, struct.pack("!H", 999)), {1002}),
    "close code 1005 on the wire": (frame(OP_CLOSE, struct.pack("!H", 1005)), {1002}),
    "close code 5000": (frame(OP_CLOSE, struct.pack("!H", 5000)), {1002}),
    "close reason not UTF-8": (
        frame(OP_CLOSE, struct.pack("!H", 1000) + b"\xff\xfe"),
        {1007, 1002},
    ),
    "one-byte close payload": (frame(OP_CLOSE, b"\x03"), {1002}),
    "control frame over 125 bytes": (frame(OP_PING, b"x" * 126), {1002}),
    "fragmented ping": (frame(OP_PING, b"x", fin=False), {1002}),
    "continuation without a start": (frame(OP_CONT, b"{}"), {1002}),
    "text inside a fragmented text": (
        frame(OP_TEXT, b"{", fin=False) + frame(OP_TEXT, b"}"),
        {1002},
    ),
    "length claims 2^63 - 1": (frame(OP_TEXT, b"", declared_length=2**63 - 1), {1009}),
    "length just over 64 KiB": (frame(OP_TEXT, b"", declared_length=65537), {1009}),
    "invalid UTF-8 text": (frame(OP_TEXT, b'{"type":"\xc3\x28"}'), {1007}),
    "binary frame": (frame(OP_BINARY, b"\x00"), {1003}),
}


@pytest.mark.parametrize("case", list(BAD_FRAMES))
async def test_bad_frame_is_closed_with_a_documented_code(cluster: Any, case: str) -> None:
    data, codes = BAD_FRAMES[case]
    node = cluster.nodes[0]
    ws = await RawWebSocket.connect("127.0.0.1", node.port)
    try:
        ws.send_bytes(data)
        code = await ws.wait_closed()
    finally:
        await ws.close()
    tracebacks = [
        line for line in node.process.lines if "Traceback" in line or '"level":"error"' in line
    ]
    # The node still answers.
    after = await RawWebSocket.connect("127.0.0.1", node.port)
    await join(after, f"ok-{uuid.uuid4().hex[:6]}", "after")
    await after.close()
    figures = f"{case}: closed {code}, node errors logged: {tracebacks[-1:]}"
    print(figures)
    assert code in codes, figures
    assert not tracebacks, figures


def test_documentation_names_every_close_code_these_frames_get() -> None:
    sent = set().union(*(codes for _, codes in BAD_FRAMES.values()))
    missing = sorted(sent - documented_close_codes())
    assert not missing, f"close codes the node sends that the documentation never names: {missing}"


# JSON that parses badly or oddly. Each must get an error frame (or, for odd but valid frames,
# an answer) while the connection stays open and usable.
BAD_JSON = {
    "deeply nested arrays": "[" * 30_000 + "]" * 30_000,
    "deeply nested objects": '{"a":' * 10_000 + "1" + "}" * 10_000,
    "lone surrogate in text": '{"type":"message","text":"\\ud800"}',
    "huge integer id": '{"type":"presence","id":' + "9" * 5000 + "}",
    "huge history limit": '{"type":"history","limit":' + "9" * 5000 + "}",
    "NaN limit": '{"type":"history","limit":NaN}',
    "float limit": '{"type":"history","limit":1e308}',
    "duplicate type keys": '{"type":"join","type":"message","text":"x"}',
    "type is an object": '{"type":{"$gt":""}}',
    "trailing garbage": '{"type":"presence"} {"type":"presence"}',
    "empty frame": "",
    "BOM before JSON": '\ufeff{"type":"presence"}',
}


@pytest.mark.parametrize("case", list(BAD_JSON))
async def test_bad_json_gets_an_error_and_the_connection_stays(cluster: Any, case: str) -> None:
    node = cluster.nodes[0]
    room = f"json-{uuid.uuid4().hex[:6]}"
    ws = await RawWebSocket.connect("127.0.0.1", node.port)
    listener = await RawWebSocket.connect("127.0.0.1", node.port)
    try:
        await join(ws, room, "sender")
        await join(listener, room, "listener")
        ws.send_bytes(frame(OP_TEXT, BAD_JSON[case].encode("utf-8", "surrogatepass")))
        await ws.send({"type": "presence", "room": room, "id": "after"})
        answer = await ws.next_text(id="after")
        # Whatever reached the room must still be JSON the listener can parse (it did: the
        # reader parses every frame) and the listener must still be served.
        await listener.send({"type": "presence", "room": room, "id": "still"})
        await listener.next_text(id="still")
    finally:
        await ws.close()
        await listener.close()
    errors = [e for e in ws.received.texts if e.get("type") == "error"]
    tracebacks = [
        line for line in node.process.lines if "Traceback" in line or '"level":"error"' in line
    ]
    codes = [e.get("code") for e in errors]
    figures = f"{case}: errors {codes}, then {answer['type']}; node errors {tracebacks[-1:]}"
    print(figures)
    assert answer["type"] == "presence", figures
    assert not tracebacks, figures
    assert ws.received.close_code is None, figures
