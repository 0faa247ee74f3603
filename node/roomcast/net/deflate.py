"""What the node offers of permessage-deflate (RFC 7692), when ``ROOMCAST_COMPRESSION`` is on,
and the room traffic it compresses once for every compressed connection.

Memory: with context takeover, each compressed connection kept a zlib compressor and
decompressor between messages for its whole life. At zlib's defaults (a 32 KiB window, memLevel
8) that was ~300 KiB of node memory per connection once it was sent a few large messages,
against ~2 KiB for an uncompressed one, and one address holds 256 WebSockets through nginx
(tests/adversarial/test_redteam19_deflate_state.py). 4 KiB windows both ways and memLevel 5
keep less, and chat messages compress nearly as well within 4 KiB.

CPU: compressed per connection, every room message cost each compressed member a deflate of its
own (~3.7 ms for 60 KB): 40 compressed members of a room, sent one client's legal 20 messages of
60 KB a second, took a node 5 s of CPU in 4 s, a bystander at 1.8 s p50. The node takes no
context over from one message to the next (``server_no_context_takeover``, which RFC 7692
7.1.1.1 lets a server answer to any offer), so a message compresses the same for every
connection, and a room's message is compressed once
(tests/adversarial/test_redteam19_deflate_fanout.py).
"""

from __future__ import annotations

import zlib
from typing import Final

from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)

from roomcast.wire.framing import deflated_text_frame, frame_payload

# 2 ** 12 = 4 KiB of LZ77 window: a compressor holds ~4 x the window + 2 ** (memLevel + 9).
WINDOW_BITS: Final = 12
MEM_LEVEL: Final = 5
# The smallest window zlib writes in (it takes 8 for 9), and so websockets agrees.
MIN_WINDOW_BITS: Final = 9
# Frames kept compressed: those of one loop turn's room traffic, written to every compressed
# member in that turn. A frame compressed again after it left costs time, never correctness.
KEPT_FRAMES: Final = 32
# The sync flush's empty stored block, which RFC 7692 7.2.1 has the sender leave off.
_EMPTY_BLOCK: Final = b"\x00\x00\xff\xff"


def server_deflate() -> ServerPerMessageDeflateFactory:
    """The extension to accept. A client that cannot be held to a small window (its offer
    lacks ``client_max_window_bits``; every browser sends it) is served uncompressed rather
    than with a 32 KiB decompressor of the node's."""
    return ServerPerMessageDeflateFactory(
        server_no_context_takeover=True,
        server_max_window_bits=WINDOW_BITS,
        client_max_window_bits=WINDOW_BITS,
        compress_settings={"memLevel": MEM_LEVEL},
        require_client_max_window_bits=True,
    )


def shared_deflates() -> dict[int, SharedDeflate]:
    """One shared compressor per window a connection may agree (a client may ask the node for
    a window as small as 512 bytes): however its clients asked, a message is compressed at
    most four times on a node."""
    return {bits: SharedDeflate(bits) for bits in range(MIN_WINDOW_BITS, WINDOW_BITS + 1)}


def shared_for(extension: Extension, deflates: dict[int, SharedDeflate]) -> SharedDeflate | None:
    """The shared compressor whose frames a connection's agreed deflate reads: none if the
    node takes context over on it (then websockets compresses for it alone)."""
    if isinstance(extension, PerMessageDeflate) and extension.local_no_context_takeover:
        return deflates.get(extension.local_max_window_bits)
    return None


class SharedDeflate:
    """Room frames compressed once, each on its own, for every compressed connection that
    agreed this window."""

    __slots__ = ("_frames", "_window_bits")

    def __init__(self, window_bits: int = WINDOW_BITS) -> None:
        self._window_bits = window_bits
        self._frames: dict[bytes, bytes] = {}

    def frame(self, frame: bytes) -> bytes:
        """The compressed frame for ``frame`` (built by ``wire.framing.text_frame``)."""
        found = self._frames.get(frame)
        if found is None:
            compressor = zlib.compressobj(
                zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -self._window_bits, MEM_LEVEL
            )
            data = compressor.compress(frame_payload(frame)) + compressor.flush(zlib.Z_SYNC_FLUSH)
            found = deflated_text_frame(data.removesuffix(_EMPTY_BLOCK))
            frames = self._frames
            if len(frames) >= KEPT_FRAMES:
                del frames[next(iter(frames))]
            frames[frame] = found
        return found
