"""Counting a request head's header lines before h11 parses them (wire.http_heads)."""

from __future__ import annotations

import pytest

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


def test_the_next_head_is_counted_afresh_or_left_to_the_parser() -> None:
    counter = HeadLines()
    assert counter.feed(head(MAX_HEADERS))
    counter.restart()
    assert not counter.feed(head(MAX_HEADERS + 1))
    counter.restart(counting=False)
    assert counter.feed(head(MAX_HEADERS + 1))
