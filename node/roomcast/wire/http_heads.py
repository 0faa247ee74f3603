"""How many header lines an HTTP request head holds, counted as its bytes arrive. No I/O.

h11 parses a head in Python, a header at a time, and bounds it by bytes only (16 KiB here): a
head of ~2,400 one-letter headers cost a node milliseconds to parse and join before any limit
of the API applied, and nginx lets one address send 200 requests a second. Counting the lines
first (``bytes.count`` and one search, in C) refuses such a head before h11 sees it, as
websockets refuses a WebSocket handshake with more than its 128 headers.
"""

from __future__ import annotations

import re
from typing import Final

# As websockets' MAX_NUM_HEADERS for the handshake on the same port: a browser sends ~20,
# nginx adds 4.
MAX_HEADERS: Final = 128
# The blank line that ends a head; h11 also takes a bare "\n" line ending.
_HEAD_END: Final = re.compile(rb"\n\r?\n")


class HeadLines:
    """Feed the bytes of one request head (and whatever follows it) as they come; ``over`` once
    the head holds more than ``limit`` header lines. Whatever comes after the head's end is not
    counted (a body may hold any number of lines) until :meth:`restart`."""

    __slots__ = ("_limit", "_tail", "done", "lines")

    def __init__(self, limit: int = MAX_HEADERS) -> None:
        self._limit = limit
        self.lines = 0  # line ends seen in the head so far (its request line's included)
        self.done = False  # the head's end was seen: nothing more is counted
        self._tail = b""  # the last two bytes of the head so far: its end may span two reads

    @property
    def over(self) -> bool:
        # The request line's end plus one per header line.
        return self.lines - 1 > self._limit

    def feed(self, data: bytes) -> bool:
        """Count the head's lines in ``data``; False once there are too many."""
        if self.done or not data:
            return not self.over
        tail = self._tail
        if tail:
            # An end spanning the previous read and this one ("\n" | "\r\n", "\n\r" | "\n").
            joined = tail + data[:2]
            found = _HEAD_END.search(joined)
            if found is not None:
                self.done = True
                # Only the line ends of this read, up to the one that ends the last header line.
                self.lines += data.count(b"\n", 0, max(0, found.start() + 1 - len(tail)))
                return not self.over
        found = _HEAD_END.search(data)
        if found is None:
            self.lines += data.count(b"\n")
            self._tail = data[-2:] if len(data) >= 2 else (tail + data)[-2:]
            return not self.over
        self.done = True
        self.lines += data.count(b"\n", 0, found.start() + 1)
        return not self.over

    def restart(self, counting: bool = True) -> None:
        """The next request's head begins (``counting`` False: it is already buffered beyond
        this count, and is checked once parsed instead)."""
        self.lines = 0
        self._tail = b""
        self.done = not counting
