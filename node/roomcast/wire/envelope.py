"""What travels between nodes on a room's channel: a small header, then the event's JSON.

The header carries what receiving nodes need without parsing JSON: the origin time (for the
fan-out latency histogram), the id of a connection to skip (the sender of ``user_joined`` or
``typing``, who must not get its own event) and the room offset of a chat message (0 for events
that are not kept in history). The offset is written by Redis itself, inside the script that
assigns it, which is why it is plain ASCII followed by a newline.

A ``user_joined`` or ``user_left`` also names, after the connection id and :data:`CAUSE_SEPARATOR`,
the client that caused it (an opaque key, see ``core.churn``): a room's churn is coalesced for that
client alone. In the same field so that nodes of the previous release, which compare the whole
field with their own connection ids (ids are per node: none ever matched), share rooms with this
one during a rolling update; what they send has no cause.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

_HEADER: Final = struct.Struct("!BdH")  # version, origin unix time (s), length of exclude id
VERSION: Final = 2
# Between the connection id to skip and the cause of a join or leave (neither contains it).
CAUSE_SEPARATOR: Final = "\x1f"


class EnvelopeError(ValueError):
    """A payload on a room channel that no roomcast node wrote."""


class Envelope(NamedTuple):
    """Immutable; a tuple, for one is unpacked per payload a node receives (a frozen
    dataclass costs a few times more to build)."""

    origin_time: float
    exclude: str
    offset: int
    event: bytes
    cause: str = ""  # who caused a user_joined or user_left ("": not told)


def head(origin_time: float, exclude: str = "", cause: str = "") -> bytes:
    """Everything before the offset; Redis appends ``<offset>\\n<json>`` for chat messages."""
    excluded = (exclude + CAUSE_SEPARATOR + cause if cause else exclude).encode()
    return _HEADER.pack(VERSION, origin_time, len(excluded)) + excluded


def pack(
    origin_time: float, event: bytes, exclude: str = "", offset: int = 0, cause: str = ""
) -> bytes:
    return head(origin_time, exclude, cause) + b"%d\n" % offset + event


def _parse(payload: bytes) -> tuple[float, int, int, int]:
    """(origin time, where the offset starts, the offset, where the event starts), checked."""
    if len(payload) < _HEADER.size:
        raise EnvelopeError("payload shorter than the envelope header")
    version, origin_time, exclude_len = _HEADER.unpack_from(payload)
    if version != VERSION:
        raise EnvelopeError(f"unknown envelope version {version}")
    start = _HEADER.size + exclude_len
    newline = payload.find(b"\n", start, start + 21)
    if newline < 0:
        raise EnvelopeError("payload truncated")
    digits = payload[start:newline]
    if not digits.isdigit():
        raise EnvelopeError("bad offset")
    if newline + 1 == len(payload):
        raise EnvelopeError("payload has no event")
    return origin_time, start, int(digits), newline + 1


def offset_of(payload: bytes) -> tuple[int, int]:
    """(offset, where the event starts) without building an :class:`Envelope`: what a receiving
    node checks on every payload before it hands the payload on (``LiveGaps``)."""
    _, _, offset, event_start = _parse(payload)
    return offset, event_start


def unpack(payload: bytes) -> Envelope:
    origin_time, start, offset, event_start = _parse(payload)
    exclude = payload[_HEADER.size : start].decode()
    if CAUSE_SEPARATOR in exclude:
        exclude, _, cause = exclude.partition(CAUSE_SEPARATOR)
        return Envelope(origin_time, exclude, offset, payload[event_start:], cause)
    return Envelope(origin_time, exclude, offset, payload[event_start:])
