"""How many pieces an HTTP request body may come in. No I/O.

A body is bounded by its bytes (``ROOMCAST_MAX_FRAME_BYTES``), but parsing it costs per piece:
h11 hands over each chunk of a chunked body, and each read of a plain one, as an event of its
own, parsed in Python. A 60 KB post in 60,000 one-byte chunks (360 KB on the wire, one write)
took ~0.6-1 s of a node's CPU before any limit of the API applied. A client that sends whole TCP
segments (536 bytes at the least) never comes near one piece per 256 bytes, even when its chunks
and its writes do not line up (a read then holds the end of one chunk and the start of the next:
two events per segment; at one per 512 bytes, a post in 536-byte chunks written 544 bytes at a
time was refused whenever the node read each write on its own); the 16 more cover a body's first
small pieces (a head's tail, a short write). A 64 KiB body is then at most 272 events (~4 ms).

A chunked body may end with trailer lines, which h11 parses as it does a head's, a line at a
time, once the blank line that ends them has come: 10,000 of them (60 KB, one write) cost a node
33 ms a request (an ordinary post: ~2 ms), refused by no limit (the head's count stops at the
head, and h11's 16 KiB bound on what it buffers applies only while a line is incomplete). The
line ends of a chunked body are counted as they arrive instead: two per chunk allowed above,
and as many trailer lines as a head may have headers.
"""

from __future__ import annotations

from typing import Final

from roomcast.wire.http_heads import MAX_HEADERS

BASE_PIECES: Final = 16
BYTES_PER_PIECE: Final = 256


def too_many_pieces(pieces: int, received: int) -> bool:
    """Whether ``pieces`` pieces are more than a body of ``received`` bytes so far may take."""
    return pieces > BASE_PIECES + received // BYTES_PER_PIECE


def too_many_lines(lines: int, received: int) -> bool:
    """Whether ``lines`` line ends are more than a chunked body of ``received`` bytes on the
    wire so far may hold: each chunk's size line and end, and MAX_HEADERS trailer lines (a JSON
    body needs no raw line end: one inside a string is written ``\\n``)."""
    return lines > 2 * (BASE_PIECES + received // BYTES_PER_PIECE) + MAX_HEADERS
