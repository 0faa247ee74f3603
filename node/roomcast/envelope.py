"""What travels between nodes on a room's channel: a tiny binary header plus the frame bytes.

The header carries what receiving nodes need without parsing JSON: the origin time (for the
fan-out latency histogram) and the id of a connection to skip (the sender of ``user_joined`` or
``typing``, who must not get its own event). The rest is the ready-made WebSocket frame.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

_HEADER: Final = struct.Struct("!BdH")  # version, origin unix time (s), length of exclude id
VERSION: Final = 1


class EnvelopeError(ValueError):
    """A payload on a room channel that no roomcast node wrote."""


@dataclass(frozen=True, slots=True)
class Envelope:
    origin_time: float
    exclude: str
    frame: bytes


def pack(origin_time: float, frame: bytes, exclude: str = "") -> bytes:
    excluded = exclude.encode()
    return _HEADER.pack(VERSION, origin_time, len(excluded)) + excluded + frame


def unpack(payload: bytes) -> Envelope:
    if len(payload) < _HEADER.size:
        raise EnvelopeError("payload shorter than the envelope header")
    version, origin_time, exclude_len = _HEADER.unpack_from(payload)
    if version != VERSION:
        raise EnvelopeError(f"unknown envelope version {version}")
    start = _HEADER.size
    end = start + exclude_len
    if len(payload) < end + 2:
        raise EnvelopeError("payload truncated")
    return Envelope(origin_time, payload[start:end].decode(), payload[end:])
