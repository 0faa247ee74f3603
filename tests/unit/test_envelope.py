"""The inter-node payload: binary header, ASCII offset line, event JSON."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomcast.wire import envelope
from roomcast.wire.envelope import Envelope, EnvelopeError, head, pack, unpack

HEADER_SIZE = 11  # version (1) + origin time (8) + exclude length (2)
EVENT = b'{"type":"typing","room":"r","username":"u"}'


def test_header_layout() -> None:
    payload = pack(1.5, EVENT, "conn-1", 42)
    assert payload[:1] == bytes([envelope.VERSION])
    assert struct.unpack("!d", payload[1:9]) == (1.5,)
    assert payload[9:11] == b"\x00\x06"
    assert payload[11:17] == b"conn-1"
    assert payload[17:20] == b"42\n"
    assert payload[20:] == EVENT
    assert envelope.VERSION == 2


def test_head_is_prefix_of_pack() -> None:
    assert pack(2.0, EVENT, "x", 7) == head(2.0, "x") + b"7\n" + EVENT
    assert head(2.0) == struct.pack("!BdH", envelope.VERSION, 2.0, 0)


def test_round_trip_defaults() -> None:
    assert unpack(pack(1_700_000_000.25, EVENT)) == Envelope(1_700_000_000.25, "", 0, EVENT)


def test_round_trip_with_unicode_exclude_and_offset() -> None:
    assert unpack(pack(0.0, EVENT, "nöde-😀\n-1", 2**53)) == Envelope(
        0.0, "nöde-😀\n-1", 2**53, EVENT
    )


# Connection ids and causes never hold the separator between them.
_FIELD = st.text(
    st.characters(codec="utf-8", exclude_characters=envelope.CAUSE_SEPARATOR),
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(
    origin=st.floats(allow_nan=False),
    exclude=_FIELD,
    offset=st.integers(min_value=0, max_value=2**64 - 1),
    event=st.binary(min_size=1, max_size=2000),
    cause=_FIELD,
)
def test_round_trip_property(
    origin: float, exclude: str, offset: int, event: bytes, cause: str
) -> None:
    packed = pack(origin, event, exclude, offset, cause)
    assert unpack(packed) == Envelope(origin, exclude, offset, event, cause)


def test_a_join_names_its_cause_after_the_connection_to_skip() -> None:
    """In the exclude field: a node of the previous release compares the whole field with its
    own connection ids (which never matched another node's), so both share rooms."""
    payload = pack(1.0, EVENT, "n1-7", cause="k3y")
    assert payload[9:11] == b"\x00\x08"
    assert payload[11:19] == b"n1-7\x1fk3y"
    assert unpack(payload) == Envelope(1.0, "n1-7", 0, EVENT, "k3y")
    # What the previous release sends (no cause) is read as told by nobody.
    assert unpack(pack(1.0, EVENT, "n1-7")).cause == ""


@pytest.mark.parametrize("size", range(HEADER_SIZE))
def test_shorter_than_header(size: int) -> None:
    payload = pack(1.0, EVENT, "c", 1)[:size]
    with pytest.raises(EnvelopeError, match="shorter than the envelope header"):
        unpack(payload)


def test_exclude_truncated() -> None:
    payload = pack(1.0, EVENT, "connection-id", 3)
    with pytest.raises(EnvelopeError, match="truncated"):
        unpack(payload[: HEADER_SIZE + 5])


def test_offset_line_truncated() -> None:
    payload = pack(1.0, EVENT, "conn", 123)
    with pytest.raises(EnvelopeError, match="truncated"):
        unpack(payload[: HEADER_SIZE + 4 + 2])  # "12" without its newline


def test_offset_line_too_long() -> None:
    with pytest.raises(EnvelopeError, match="truncated"):
        unpack(head(1.0) + b"1" * 25 + b"\n" + EVENT)


@pytest.mark.parametrize("offset", [b"", b"abc", b"1.5", b"0x10"])
def test_bad_offset(offset: bytes) -> None:
    with pytest.raises(EnvelopeError, match="bad offset"):
        unpack(head(1.0, "c") + offset + b"\n" + EVENT)


def test_event_missing() -> None:
    with pytest.raises(EnvelopeError, match="payload has no event"):
        unpack(pack(1.0, b"", "conn", 5))


@pytest.mark.parametrize("version", [0, 1, 3, 255])
def test_wrong_version(version: int) -> None:
    payload = bytearray(pack(1.0, EVENT, "conn"))
    payload[0] = version
    with pytest.raises(EnvelopeError, match=f"unknown envelope version {version}"):
        unpack(bytes(payload))


def test_foreign_payload_is_rejected() -> None:
    # Something another publisher might put on the channel: plain JSON.
    with pytest.raises(EnvelopeError):
        unpack(b'{"type":"message","text":"hi"}')


def test_envelope_error_is_value_error() -> None:
    assert issubclass(EnvelopeError, ValueError)
