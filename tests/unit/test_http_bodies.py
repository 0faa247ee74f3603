"""How many pieces a request body may come in (wire.http_bodies)."""

from __future__ import annotations

from roomcast.wire.http_bodies import BASE_PIECES, too_many_pieces


def test_whole_segments_always_fit() -> None:
    for segment in (536, 1448, 65_536):
        received = 0
        for pieces in range(1, 200):
            received += segment
            assert not too_many_pieces(pieces, received), (segment, pieces)


def test_one_byte_pieces_are_refused_after_a_few() -> None:
    first_refused = next(n for n in range(1, 1000) if too_many_pieces(n, n))
    assert first_refused == BASE_PIECES + 1
