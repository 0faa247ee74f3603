"""How many pieces a request body may come in (wire.http_bodies)."""

from __future__ import annotations

from roomcast.wire.http_bodies import BASE_PIECES, too_many_lines, too_many_pieces
from roomcast.wire.http_heads import MAX_HEADERS


def test_whole_segments_always_fit() -> None:
    for segment in (536, 1448, 65_536):
        received = 0
        for pieces in range(1, 200):
            received += segment
            assert not too_many_pieces(pieces, received), (segment, pieces)


def test_chunks_across_segment_writes_fit() -> None:
    # 536-byte chunks (543 bytes framed) written 544 bytes at a time, each write read alone:
    # every read after the first holds the end of one chunk and the start of the next.
    received = pieces = 0
    for _ in range(120):  # a 64 KB post
        received += 536
        pieces += 2
        assert not too_many_pieces(pieces, received), (pieces, received)


def test_one_byte_pieces_are_refused_after_a_few() -> None:
    first_refused = next(n for n in range(1, 1000) if too_many_pieces(n, n))
    assert first_refused == BASE_PIECES + 1


def test_a_chunked_body_has_its_chunks_lines_and_a_heads_worth_of_trailers() -> None:
    # 64 KiB in chunks of 512: two line ends each, and 128 trailer lines, pass.
    received = 65_536 + 128 * 8
    chunks = 65_536 // 512
    assert not too_many_lines(2 * chunks + MAX_HEADERS, received)
    # Ten thousand trailer lines behind a short body do not.
    assert too_many_lines(2 + 10_000, 40 + 60_000)
