"""How many header lines and bytes an HTTP request head holds, counted as they arrive. No I/O.

h11 parses a head in Python, a header at a time, and bounds it by bytes only (16 KiB here): a
head of ~2,400 one-letter headers cost a node milliseconds to parse and join before any limit
of the API applied, and nginx lets one address send 200 requests a second. Counting the lines
first (``bytes.count`` and one search, in C) refuses such a head before h11 sees it, as
websockets refuses a WebSocket handshake with more than its 128 headers.

The head's bytes are counted here too: h11's ``max_incomplete_event_size`` bounds only a head
still incomplete, so a whole head that came in one read (up to the event loop's 256 KiB) was
parsed at any size, and a 64 KB head answered 200 where the API documents 431 over 16 KiB.
"""

from __future__ import annotations

import re
from typing import Final

# Counted from the request line to the blank line that ends the head, that line included (as
# the WebSocket handshake's own bound is counted, net/transport.py).
from roomcast.wire.api import MAX_HEAD_BYTES

# As websockets' MAX_NUM_HEADERS for the handshake on the same port: a browser sends ~20,
# nginx adds 4.
MAX_HEADERS: Final = 128
# The blank line that ends a head; h11 also takes a bare "\n" line ending.
_HEAD_END: Final = re.compile(rb"\n\r?\n")


class HeadLines:
    """Feed the bytes of one request head (and whatever follows it) as they come; ``over`` once
    the head holds more than ``limit`` header lines or ``max_bytes`` bytes. Whatever comes
    after the head's end is not counted (a body may hold any number of lines) until
    :meth:`restart`."""

    __slots__ = ("_limit", "_max_bytes", "_tail", "bytes", "done", "lines")

    def __init__(self, limit: int = MAX_HEADERS, max_bytes: int = MAX_HEAD_BYTES) -> None:
        self._limit = limit
        self._max_bytes = max_bytes
        self.lines = 0  # line ends seen in the head so far (its request line's included)
        self.bytes = 0  # the head's bytes so far (up to its end, once seen)
        self.done = False  # the head's end was seen: nothing more is counted
        self._tail = b""  # the last two bytes of the head so far: its end may span two reads

    @property
    def too_many_lines(self) -> bool:
        # The request line's end plus one per header line.
        return self.lines - 1 > self._limit

    @property
    def too_long(self) -> bool:
        return self.bytes > self._max_bytes

    @property
    def over(self) -> bool:
        return self.too_many_lines or self.too_long

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
                self.bytes += found.end() - len(tail)
                return not self.over
        found = _HEAD_END.search(data)
        if found is None:
            self.lines += data.count(b"\n")
            self.bytes += len(data)
            self._tail = data[-2:] if len(data) >= 2 else (tail + data)[-2:]
            return not self.over
        self.done = True
        self.lines += data.count(b"\n", 0, found.start() + 1)
        self.bytes += found.end()
        return not self.over

    def restart(self) -> None:
        """The next request's head begins: feed it what is already buffered of it first."""
        self.lines = 0
        self.bytes = 0
        self._tail = b""
        self.done = False
