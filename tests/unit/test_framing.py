"""Server text frame bytes match websockets' own serialization."""

from __future__ import annotations

from collections.abc import Generator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode

from roomcast.wire.framing import frame_payload, text_frame

LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 70000]


def reference(payload: bytes) -> bytes:
    return Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])


@pytest.mark.parametrize("length", LENGTHS)
def test_text_frame_equals_websockets_serialization(length: int) -> None:
    payload = bytes(i % 251 for i in range(length))
    frame = text_frame(payload)
    assert frame == reference(payload)


@pytest.mark.parametrize(
    ("length", "header"),
    [
        (0, b"\x81\x00"),
        (1, b"\x81\x01"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
        (70000, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x11\x70"),
    ],
)
def test_text_frame_header(length: int, header: bytes) -> None:
    payload = b"a" * length
    frame = text_frame(payload)
    assert frame[: len(header)] == header
    assert len(frame) == len(header) + length
    assert frame[len(header) :] == payload


@pytest.mark.parametrize("length", LENGTHS)
def test_frame_payload_round_trip(length: int) -> None:
    payload = bytes((i * 7) % 256 for i in range(length))
    assert frame_payload(text_frame(payload)) == payload


def test_frame_parses_back_with_websockets() -> None:
    payload = '{"type":"message","text":"héllo 😀"}'.encode()
    data = text_frame(payload)
    position = 0

    def read_exact(n: int) -> Generator[None, None, bytes]:
        nonlocal position
        chunk = data[position : position + n]
        position += n
        yield from ()
        return chunk

    parser = Frame.parse(read_exact, mask=False)
    with pytest.raises(StopIteration) as done:
        next(parser)
    frame = done.value.value
    assert frame.opcode is Opcode.TEXT
    assert frame.fin is True
    assert bytes(frame.data) == payload
    assert position == len(data)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_frame_round_trip_property(payload: bytes) -> None:
    frame = text_frame(payload)
    assert frame == reference(payload)
    assert frame_payload(frame) == payload
