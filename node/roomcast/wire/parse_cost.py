"""What parsing a long client frame or API body cost, and whether that was too much. No I/O:
the clocks are the caller's (roomcast.runtime.parse_clock).

The value count (wire.frame_values) bounds what a parse leaves. It cannot see what a parse built
and dropped: orjson keeps only the last of an object's repeated keys, so
``{"a": [60 empty arrays], "a": [...], ..., "a": 0}`` (60 KB) builds ~20,000 lists, frees them as
each key is overwritten, and leaves 3 values: ~0.9-1.6 ms of the node's thread against ~0.03 ms
for 60 KB of plain text. So a long frame's parse is also timed, and a parse slower than
PARSE_NS_FLOOR + PARSE_NS_PER_BYTE per UTF-8 byte is refused as one of too many values is,
when its text also shows what was dropped: more commas, brackets and braces outside its
strings than the parsed value's containers need. Repeated keys of scalars cost nearly as much
as of arrays: ``"a":0,"a":0,...`` (60 KB) parses in ~11 ns a byte, ~20 times plain text.

Time alone would refuse innocents: on a shared machine a 1 KB frame's 2.7 us parse reads as over
37 us one time in a thousand even on the thread's CPU clock (page faults, interrupts), and a
monotonic clock also counts time given to other processes. A parse that drops nothing is never
refused, however slow it reads.

Time spent in garbage-collector passes during a parse is taken off it, not the parse let through
unjudged: a frame can make a pass run itself (60 KB of nested lists build 30,000, more than the
young generation's threshold of net allocations), and a parse during whose pass was exempt went
unrefused every time (tests/adversarial/test_breakstop30_collected_parse.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson

from roomcast.wire.frame_values import holds_too_many_values

# The most time a parse may take per UTF-8 byte of its frame. Measured (orjson, 60 KB, thread
# CPU time): plain text 0.5 ns/byte, brackets and commas in a string 1 ns, \uXXXX escapes
# 1.5 ns, text in other scripts (CJK, emoji, accented Latin) 2-4 ns at the median, 5 ns at
# worst; repeated keys 10-11 ns (of numbers or strings) to 14-25 ns (of empty arrays). A parse
# over the bound is refused only if it dropped values, so the bound needs no room above the
# slowest legitimate text: it only decides which parses pay for a scan of their text.
PARSE_NS_PER_BYTE: Final = 6
# Room for a clock's granularity and a page fault on a short frame: a 1 KB frame parses in
# ~2.5 us. Small, because frames under the floor's reach cost no more per byte than long ones.
PARSE_NS_FLOOR: Final = 20_000
# Values a slow parse may have dropped for repeated keys and still be accepted.
MAX_DROPPED_VALUES: Final = 64


@dataclass(frozen=True, slots=True)
class ParseClock:
    """The caller's clocks: a monotonic time in ns, and the ns that garbage-collector passes have
    taken in all, read on the same clock (a pass is taken off the parse it interrupted: it may
    be another connection's doing)."""

    ns: Callable[[], int]
    collecting_ns: Callable[[], int]


def allowed_parse_ns(utf8_bytes: int) -> int:
    """The most time a frame or body of ``utf8_bytes`` may take to parse."""
    return PARSE_NS_FLOOR + PARSE_NS_PER_BYTE * utf8_bytes


def took_too_long(text: str | bytes, took_ns: int) -> bool:
    """Whether ``took_ns`` is more than ``text``'s size allows. The size is in UTF-8 bytes (the
    cost of text in other scripts scales with them); a str is encoded to count them only when
    its parse took longer than its length in characters would allow."""
    if took_ns <= allowed_parse_ns(len(text)):
        return False
    if isinstance(text, bytes) or text.isascii():
        return True
    return took_ns > allowed_parse_ns(len(text.encode("utf-8", "surrogatepass")))


def parse_long(text: str | bytes, clock: ParseClock | None, max_values: int) -> tuple[Any, bool]:
    """Parse a frame or body longer than COUNTED_FROM_CHARS: its JSON value, and whether it was
    costly (more than ``max_values`` values, or a parse slower than its size allows). Raises
    orjson.JSONDecodeError as orjson.loads does. Without a clock, only the values are counted."""
    if clock is None:
        data = orjson.loads(text)
        return data, holds_too_many_values(data, max_values)
    collecting = clock.collecting_ns()
    started = clock.ns()
    data = orjson.loads(text)
    took = clock.ns() - started - (clock.collecting_ns() - collecting)
    if holds_too_many_values(data, max_values):
        return data, True
    return data, took_too_long(text, took) and dropped_values(text, data)


def dropped_values(text: str | bytes, data: Any) -> bool:
    """Whether ``text`` writes more values than its parsed ``data`` (of at most a bound of
    values) holds: what orjson built and dropped for repeated keys. Every value but a
    container's first follows a comma, and every container opens with a bracket or a brace, so
    the commas, brackets and braces written outside the text's strings are counted against
    those the parsed value's containers need. A few dropped values are allowed
    (MAX_DROPPED_VALUES): they cost little. Asked only of a parse already too slow: the scan
    (a few passes in C, ~1 ns a byte of 60 KB) is off the hot path."""
    encoded = text if isinstance(text, bytes) else _utf8(text)
    needed, in_strings = _structure(data)
    return _written_outside_strings(encoded, in_strings) > needed + MAX_DROPPED_VALUES


# The escapes that write a comma, a bracket or a brace (JSON has no shorter ones for them).
_ESCAPED_STRUCTURE: Final = (b"\\u002c", b"\\u002C", b"\\u005b", b"\\u005B", b"\\u007b", b"\\u007B")


def _written_outside_strings(text: bytes, in_strings: int) -> int:
    """The commas, brackets and braces ``text`` writes outside its strings: all it writes, less
    those its parsed strings hold (``in_strings``) but escapes. Not less all its strings hold:
    an escaped bracket (``\\u005b``, 6 bytes) is held but not written as one, and made up for
    a list a repeated key dropped. Found without splitting the text at its quotes, which made
    ~1 ms of 20,000 keys' quotes."""
    if in_strings and b"u00" in text:  # escapes are looked for only where there can be some
        in_strings -= _escaped_structure(text)
    return _structural_chars(text) - in_strings


def _escaped_structure(text: bytes) -> int:
    """The commas, brackets and braces ``text`` writes as escapes. Escaped backslashes are
    removed first, so ``\\\\u005b`` (a backslash, then text) is none; that removal costs
    ~8 ns a byte of backslashes, so only text whose strings hold what an escape could write
    pays it."""
    if b"\\\\" in text:
        text = text.replace(b"\\\\", b"")
    return sum(text.count(escape) for escape in _ESCAPED_STRUCTURE)


def _structural_chars(text: bytes) -> int:
    # One pass for the three characters (bytes.count takes a pass each).
    return len(text) - len(text.translate(None, b",[{"))


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _structure(data: Any) -> tuple[int, int]:
    """The commas, brackets and braces ``data``'s containers need written, and those its
    strings (keys too) hold."""
    needed = held = 0
    pending: list[Any] = [data]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            held += _structural_chars(_utf8(value))
        elif isinstance(value, dict):
            needed += max(len(value), 1)  # its brace, and a comma before every member but one
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            needed += max(len(value), 1)
            pending.extend(value)
    return needed, held
