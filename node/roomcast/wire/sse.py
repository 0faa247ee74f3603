"""Server-Sent Events framing (the ``text/event-stream`` format). No I/O.

Room events are one-line JSON (orjson escapes newlines in strings), so an event is one ``data:``
line; chat messages also carry ``id: <offset>``, which the browser's EventSource sends back as
``Last-Event-ID`` when it reconnects. Events without an offset (typing, joins) carry no id, which
leaves the client's last id unchanged, as the resume point must be.
"""

from __future__ import annotations

from typing import Final

# A comment line: keeps proxies and the client's idle timers from closing a quiet stream.
HEARTBEAT: Final = b": ping\n\n"
MAX_LAST_EVENT_ID: Final = 2**53


def event(data: bytes, event_id: int = 0) -> bytes:
    """One event; ``event_id`` 0 means none (events that are not kept in history)."""
    if b"\n" in data or b"\r" in data:
        # Not produced by roomcast's encoders, but the format would break: one data line each.
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        body = b"".join(b"data: " + line + b"\n" for line in lines)
    else:
        body = b"data: " + data + b"\n"
    if event_id:
        return b"id: %d\n" % event_id + body + b"\n"
    return body + b"\n"


def retry(milliseconds: int) -> bytes:
    """Tells EventSource how long to wait before reconnecting."""
    return b"retry: %d\n\n" % milliseconds


def parse_last_event_id(raw: str | None) -> int | None:
    """The offset to resume after, or None (absent or not an offset we could have sent)."""
    if raw is None:
        return None
    value = raw.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 16:
        return None
    offset = int(value)
    return offset if offset <= MAX_LAST_EVENT_ID else None
