"""Room frames compressed once for every compressed connection (net/deflate.py)."""

from __future__ import annotations

import asyncio
import json
import operator
import zlib

from prometheus_client import CollectorRegistry
from websockets.extensions.permessage_deflate import PerMessageDeflate

from roomcast.core.node import Node
from roomcast.net.deflate import (
    KEPT_FRAMES,
    MIN_WINDOW_BITS,
    WINDOW_BITS,
    SharedDeflate,
    shared_deflates,
    shared_for,
)
from roomcast.net.transport import WebSocketServer
from roomcast.runtime.metrics import Metrics
from roomcast.wire.framing import frame_payload, text_frame
from tests.support.wsharness import INSTANCE, make_settings


def inflate(frame: bytes, window_bits: int = WINDOW_BITS) -> bytes:
    """What a client that agreed the node's window reads from a compressed frame."""
    assert frame[0] == 0xC1  # FIN, RSV1 (compressed), text
    return zlib.decompressobj(-window_bits).decompress(frame_payload(frame) + b"\x00\x00\xff\xff")


def test_a_frame_inflates_to_its_payload_at_every_length_marker() -> None:
    deflate = SharedDeflate()
    for size in (10, 200, 70_000):  # 7-bit, 16-bit and 64-bit lengths once compressed
        payload = json.dumps({"type": "message", "text": bytes(range(256)).hex()[:size] * 3})
        frame = text_frame(payload.encode())
        assert inflate(deflate.frame(frame)) == payload.encode()


def test_a_frame_is_compressed_once_for_all_its_recipients() -> None:
    deflate = SharedDeflate()
    frame = text_frame(b'{"type":"message","text":"hello"}')
    assert deflate.frame(frame) is deflate.frame(frame)


def test_frames_stand_alone_so_a_persistent_decoder_reads_them_in_any_order() -> None:
    deflate = SharedDeflate()
    frames = [text_frame(json.dumps({"n": n, "text": "abc" * n}).encode()) for n in range(5)]
    decoder = zlib.decompressobj(-15)  # a client that keeps its context (the default)
    for frame in reversed(frames):
        read = decoder.decompress(frame_payload(deflate.frame(frame)) + b"\x00\x00\xff\xff")
        assert read == frame_payload(frame)


def test_it_keeps_a_bounded_number_of_frames_once_a_turn_ended() -> None:
    deflate = SharedDeflate()
    first = text_frame(b'{"n":-1}')
    kept = deflate.frame(first)
    for n in range(KEPT_FRAMES):
        deflate.frame(text_frame(json.dumps({"n": n}).encode()))
    deflate.turn_ended()
    again = deflate.frame(first)
    assert again == kept and again is not kept  # compressed again once it was let go


def test_a_turn_of_more_frames_than_it_keeps_compresses_each_once_for_every_member() -> None:
    # The outbox writes a turn's frames member by member: 40 members, 40 room messages of 5 KB
    # (more than it keeps past a turn) in one turn. A bounded cache let the first member's
    # frames push out the earliest before the next member asked: 1,600 deflates, not 40.
    deflate = SharedDeflate()
    frames = [
        text_frame(json.dumps({"n": n, "text": f"{n:05d}" * 1000}).encode())
        for n in range(KEPT_FRAMES + 8)
    ]
    first_member = [deflate.frame(frame) for frame in frames]
    for _ in range(39):
        assert all(map(operator.is_, map(deflate.frame, frames), first_member))
    deflate.turn_ended()
    kept = [deflate.frame(frame) for frame in frames[-KEPT_FRAMES:]]
    assert all(map(operator.is_, kept, first_member[-KEPT_FRAMES:]))


def test_each_window_a_client_may_agree_has_its_own_compressor() -> None:
    deflates = shared_deflates()
    assert sorted(deflates) == list(range(MIN_WINDOW_BITS, WINDOW_BITS + 1))
    payload = json.dumps({"text": "".join(chr(97 + (n * 7919) % 26) for n in range(9000))})
    for bits, deflate in deflates.items():
        # A client that asked for this window inflates with no more than it.
        assert inflate(deflate.frame(text_frame(payload.encode())), bits) == payload.encode()
        agreed = PerMessageDeflate(False, True, 15, bits)
        assert shared_for(agreed, deflates) is deflate
    # Context taken over (not what the node agrees): websockets compresses for it alone.
    assert shared_for(PerMessageDeflate(False, False, 15, WINDOW_BITS), deflates) is None


async def test_the_node_forgets_a_turns_frames_when_its_outbox_flushed() -> None:
    settings = make_settings(compression=True)
    metrics = Metrics(CollectorRegistry())
    node = Node(settings.node_id, 16, settings.max_frame_bytes, metrics)
    server = WebSocketServer(node, settings, metrics, asyncio.get_running_loop(), INSTANCE)
    deflates = server.deflates
    first = text_frame(b'{"n":-1}')
    kept = [deflate.frame(first) for deflate in deflates.values()]
    for deflate in deflates.values():
        for n in range(KEPT_FRAMES):
            deflate.frame(text_frame(json.dumps({"n": n}).encode()))
    server.outbox.flush()
    again = [deflate.frame(first) for deflate in deflates.values()]
    assert again == kept and not any(map(operator.is_, again, kept))
