"""WebSocket frame bytes built once and shared by every recipient.

A server-to-client frame is unmasked (RFC 6455 §5.1), so without compression the bytes of a text
frame depend only on its payload: the node builds them once per message and writes the same
object to every local socket.
"""

from __future__ import annotations

import struct
from typing import Final

_FIN_TEXT: Final = 0x81
_FIN_TEXT_DEFLATED: Final = 0xC1
_LEN16: Final = struct.Struct("!BBH")
_LEN64: Final = struct.Struct("!BBQ")


def text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented text frame carrying ``payload`` (already valid UTF-8)."""
    return text_frame_head(len(payload)) + payload


def text_frame_head(length: int, first: int = _FIN_TEXT) -> bytes:
    """The header of an unmasked, unfragmented text frame of ``length`` payload bytes: a large
    answer's payload follows it in pieces, written as the client drains. ``first``: its first
    byte (RSV1 set for a compressed one)."""
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return _LEN16.pack(first, 126, length)
    return _LEN64.pack(first, 127, length)


def deflated_text_frame(deflated: bytes) -> bytes:
    """An unmasked, unfragmented text frame of a message compressed on its own (RFC 7692: RSV1
    on, the sync flush's empty block left off)."""
    return text_frame_head(len(deflated), _FIN_TEXT_DEFLATED) + deflated


def frame_payload(frame: bytes) -> bytes:
    """The payload of a frame built by :func:`text_frame` (for connections that compress)."""
    marker = frame[1]
    if marker < 126:
        return frame[2:]
    if marker == 126:
        return frame[4:]
    return frame[10:]
