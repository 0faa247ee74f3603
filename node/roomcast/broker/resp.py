"""RESP, the Redis wire format, for the commands the broker sends: pure bytes, no I/O.

Built by hand rather than with redis-py's packer: every publication is one of these, and the
generic packer's per-argument type checks cost more than the bytes themselves.
"""

from __future__ import annotations

from typing import Final


def bulk(value: bytes) -> bytes:
    """One bulk string: ``$<length>\\r\\n<value>\\r\\n``."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def command(*parts: bytes) -> bytes:
    """One command as an array of bulk strings."""
    # No call per part (a join's script has 17): the joined list's own loop formats each.
    return b"*%d\r\n" % len(parts) + b"".join([b"$%d\r\n%s\r\n" % (len(p), p) for p in parts])


def evalsha(sha: bytes, keys: tuple[bytes, ...], args: tuple[bytes, ...]) -> bytes:
    """EVALSHA of a loaded script: its keys counted first, then its arguments."""
    return command(b"EVALSHA", sha, b"%d" % len(keys), *keys, *args)


def head(name: bytes, arguments: int) -> bytes:
    """The start of a command whose ``arguments`` bulk strings the caller appends itself (the
    publish path adds the channel and payload to this prefix, built once)."""
    return b"*%d\r\n" % (arguments + 1) + bulk(name)


PING: Final = command(b"PING")
TIME: Final = command(b"TIME")
