"""How many pieces an HTTP request body may come in. No I/O.

A body is bounded by its bytes (``ROOMCAST_MAX_FRAME_BYTES``), but parsing it costs per piece:
h11 hands over each chunk of a chunked body, and each read of a plain one, as an event of its
own, parsed in Python. A 60 KB post in 60,000 one-byte chunks (360 KB on the wire, one write)
took ~0.6-1 s of a node's CPU before any limit of the API applied. A client that sends whole TCP
segments (536 bytes at the least) never comes near one piece per 512 bytes; the 16 more cover a
body's first small pieces (a head's tail, a short write).
"""

from __future__ import annotations

from typing import Final

BASE_PIECES: Final = 16
BYTES_PER_PIECE: Final = 512


def too_many_pieces(pieces: int, received: int) -> bool:
    """Whether ``pieces`` pieces are more than a body of ``received`` bytes so far may take."""
    return pieces > BASE_PIECES + received // BYTES_PER_PIECE
