"""Counting a request head's header lines before h11 parses them (wire.http_heads)."""

from __future__ import annotations

import pytest

from roomcast.wire.api import MAX_HEAD_BYTES
from roomcast.wire.http_heads import MAX_HEADERS, HeadLines


def head(headers: int, ending: bytes = b"\r\n") -> bytes:
    lines = [b"GET /api/rooms/a/history HTTP/1.1", *(b"h%d: v" % i for i in range(headers))]
    return ending.join(lines) + ending + ending


@pytest.mark.parametrize("ending", [b"\r\n", b"\n"])
@pytest.mark.parametrize("headers", [0, 1, MAX_HEADERS])
def test_a_head_within_the_limit_passes_in_one_read(headers: int, ending: bytes) -> None:
    counter = HeadLines()
    assert counter.feed(head(headers, ending))
    assert counter.done
    assert counter.lines == headers + 1


@pytest.mark.parametrize("ending", [b"\r\n", b"\n"])
def test_one_header_too_many_is_refused(ending: bytes) -> None:
    assert not HeadLines().feed(head(MAX_HEADERS + 1, ending))


@pytest.mark.parametrize("ending", [b"\r\n", b"\n"])
@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_a_head_in_pieces_counts_the_same(size: int, ending: bytes) -> None:
    for headers, fits in ((MAX_HEADERS, True), (MAX_HEADERS + 1, False)):
        data = head(headers, ending)
        counter = HeadLines()
        results = [counter.feed(data[at : at + size]) for at in range(0, len(data), size)]
        assert results[-1] is fits, (headers, size)
        if fits:
            assert counter.lines == headers + 1, (headers, size)


def test_a_head_that_never_ends_is_refused_once_over() -> None:
    counter = HeadLines()
    assert counter.feed(b"GET / HTTP/1.1\r\n")
    assert not counter.feed(b"a: b\r\n" * (MAX_HEADERS + 1))
    assert not counter.done


def test_a_body_after_the_head_is_not_counted() -> None:
    body = b"line\n" * 10_000
    counter = HeadLines()
    assert counter.feed(head(3) + body)
    assert counter.feed(body)
    assert counter.lines == 4


def test_the_next_head_is_counted_afresh() -> None:
    counter = HeadLines()
    assert counter.feed(head(MAX_HEADERS))
    counter.restart()
    assert not counter.feed(head(MAX_HEADERS + 1))
    counter.restart()
    assert counter.feed(head(MAX_HEADERS))


def test_a_buffered_head_and_its_rest_are_counted_once_each() -> None:
    # What was buffered behind the previous request, then what came after it.
    data = long_head(MAX_HEAD_BYTES)
    counter = HeadLines()
    assert counter.feed(data[:1])
    assert counter.feed(data[1:])
    assert counter.bytes == MAX_HEAD_BYTES
    counter.restart()
    assert counter.feed(data[:1])
    assert not counter.feed(long_head(MAX_HEAD_BYTES + 1)[1:])


def long_head(length: int) -> bytes:
    """A head of exactly ``length`` bytes, its blank line included."""
    start, end = b"GET /api/rooms/a/history HTTP/1.1\r\nx-filler: ", b"\r\n\r\n"
    return start + b"x" * (length - len(start) - len(end)) + end


@pytest.mark.parametrize("size", [None, 1, 7, 4096])
def test_a_head_of_the_bound_passes_and_one_byte_more_is_refused(size: int | None) -> None:
    for length, fits in ((MAX_HEAD_BYTES, True), (MAX_HEAD_BYTES + 1, False)):
        data = long_head(length) + b"a body after the head is not counted" * 100
        counter = HeadLines()
        step = size or len(data)
        results = [counter.feed(data[at : at + step]) for at in range(0, len(data), step)]
        assert results[-1] is fits, (length, size)
        assert counter.too_long is not fits and not counter.too_many_lines, (length, size)
        if fits:
            assert counter.bytes == length, (length, size)


def test_a_head_whole_in_one_read_is_bounded_by_its_bytes() -> None:
    # h11 bounds only a head still incomplete: this one in one read passed it at any size.
    assert not HeadLines().feed(long_head(64 * 1024))
