"""A handshake's head is bounded as a whole (net.handshake.MAX_HEAD_BYTES), counted across the
reads it comes in: websockets bounds only each line and their count."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from roomcast.net.handshake import MAX_HEAD_BYTES
from tests.support.wsharness import FakeTransport, RecordingApp, make_server

START = (
    b"GET /chat HTTP/1.1\r\nHost: roomcast\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


def head_of(size: int) -> bytes:
    """A valid handshake head of exactly ``size`` bytes, padded with 4 KB header lines."""
    pad = size - len(START) - 2
    lines: list[bytes] = []
    while pad > 0:
        value = min(4000, pad - len(b"X-Pad-00: \r\n"))
        line = b"X-Pad-%02d: %s\r\n" % (len(lines), b"a" * value)
        lines.append(line)
        pad -= len(line)
    head = START + b"".join(lines) + b"\r\n"
    assert len(head) == size
    return head


@pytest.mark.parametrize(
    ("size", "status"), [(MAX_HEAD_BYTES, b"101"), (MAX_HEAD_BYTES + 1, b"431")]
)
async def test_a_head_over_the_bound_is_refused_431(size: int, status: bytes) -> None:
    server = make_server(RecordingApp())
    transport = FakeTransport()
    conn = server._new_connection()
    conn.connection_made(cast(asyncio.BaseTransport, transport))
    head = head_of(size)
    for start in range(0, len(head), 1000):  # in reads, as a socket gives it
        conn.data_received(head[start : start + 1000])
    answer = transport.take()
    assert answer.split(b" ", 2)[1] == status, answer[:200]


def _answer_to(pieces: list[bytes]) -> bytes:
    server = make_server(RecordingApp())
    transport = FakeTransport()
    conn = server._new_connection()
    conn.connection_made(cast(asyncio.BaseTransport, transport))
    for piece in pieces:
        conn.data_received(piece)
    return transport.take()


@pytest.mark.parametrize(
    ("size", "status"), [(MAX_HEAD_BYTES, b"101"), (MAX_HEAD_BYTES + 1, b"431")]
)
@pytest.mark.parametrize("cut", [1, 2, 3], ids=["cr-lf-cr|lf", "cr-lf|cr-lf", "cr|lf-cr-lf"])
async def test_the_bound_holds_when_the_head_s_end_is_split_across_reads(
    size: int, status: bytes, cut: int
) -> None:
    """The count of a read whose ``\\r\\n\\r\\n`` began in the read before: only the bytes of
    this read up to the end are the head's."""
    head = head_of(size)
    answer = _answer_to([head[: len(head) - cut], head[len(head) - cut :]])
    assert answer.split(b" ", 2)[1] == status, answer[:200]


async def test_a_head_at_the_bound_sent_a_byte_at_a_time_is_accepted() -> None:
    head = head_of(MAX_HEAD_BYTES)
    answer = _answer_to([head[i : i + 1] for i in range(len(head))])
    assert answer.split(b" ", 2)[1] == b"101", answer[:200]


async def test_bytes_behind_a_head_at_the_bound_are_not_counted_as_head() -> None:
    """A client that does not wait for the 101: its first frame (a masked ping, 6 bytes) comes
    in the same read as a head of exactly MAX_HEAD_BYTES, and is a frame, not more head."""
    ping = b"\x89\x80\x01\x02\x03\x04"
    answer = _answer_to([head_of(MAX_HEAD_BYTES) + ping])
    assert answer.split(b" ", 2)[1] == b"101", answer[:200]
    assert answer.endswith(b"\x8a\x00"), answer[-20:]  # and the ping was answered
