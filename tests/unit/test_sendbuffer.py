"""SendBuffer.write_pieces: the same bound as write, without joining the pieces."""

from __future__ import annotations

import asyncio
from typing import cast

from roomcast.net.sendbuffer import TRANSPORT_HIGH_WATER, SendBuffer


class Transport:
    def __init__(self) -> None:
        self.calls: list[list[bytes]] = []
        self.buffered = 0
        self.aborted = False
        self.high_water: int | None = None  # None: the transport's default (64 KiB)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high_water = high

    def abort(self) -> None:
        self.aborted = True

    def writelines(self, pieces: list[bytes]) -> None:
        self.calls.append(list(pieces))

    def write(self, data: bytes) -> None:
        self.calls.append([data])

    def get_write_buffer_size(self) -> int:
        return self.buffered


def buffer(limit: int = 100) -> tuple[SendBuffer, Transport]:
    transport = Transport()
    return SendBuffer(cast(asyncio.Transport, transport), limit), transport


def test_pieces_reach_the_transport_as_they_are() -> None:
    send, transport = buffer()
    event = b"e" * 500  # one object shared by every stream of a fan-out
    assert send.write_pieces([b"1f4\r\n", event, b"\r\n"], 507)
    assert transport.calls == [[b"1f4\r\n", event, b"\r\n"]]
    assert transport.calls[0][1] is event  # not copied


def test_a_backed_up_client_is_refused_past_the_limit() -> None:
    send, transport = buffer(limit=100)
    transport.buffered = 60
    assert not send.write_pieces([b"a" * 30, b"b" * 20], 50)
    assert transport.calls == []
    assert send.write_pieces([b"a" * 30, b"b" * 10], 40)


def test_pieces_wait_in_order_while_paused() -> None:
    send, transport = buffer(limit=1000)
    send.pause()
    assert send.write_pieces([b"one", b"two"], 6)
    assert send.write(b"three")
    assert send.outstanding == 11
    send.resume()
    assert b"".join(b"".join(call) for call in transport.calls) == b"onetwothree"
    assert send.outstanding == 0


def test_a_limit_below_the_transports_high_water_mark_lowers_the_mark() -> None:
    # Past the limit the client lags until resume_writing, which only a paused transport calls.
    assert buffer(8192)[1].high_water == 8192
    assert buffer(TRANSPORT_HIGH_WATER)[1].high_water is None
    assert buffer(1024 * 1024)[1].high_water is None
