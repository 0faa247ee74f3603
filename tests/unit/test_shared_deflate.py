"""Room frames compressed once for every compressed connection (net/deflate.py)."""

from __future__ import annotations

import json
import zlib

from websockets.extensions.permessage_deflate import PerMessageDeflate

from roomcast.net.deflate import (
    KEPT_FRAMES,
    MIN_WINDOW_BITS,
    WINDOW_BITS,
    SharedDeflate,
    shared_deflates,
    shared_for,
)
from roomcast.wire.framing import frame_payload, text_frame


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


def test_it_keeps_a_bounded_number_of_frames() -> None:
    deflate = SharedDeflate()
    first = text_frame(b'{"n":-1}')
    kept = deflate.frame(first)
    for n in range(KEPT_FRAMES):
        deflate.frame(text_frame(json.dumps({"n": n}).encode()))
    again = deflate.frame(first)
    assert again == kept and again is not kept  # compressed again once it was let go


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
