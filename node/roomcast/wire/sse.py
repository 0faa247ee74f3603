"""Server-Sent Events framing (the ``text/event-stream`` format). No I/O.

Room events are one-line JSON (orjson escapes newlines in strings), so an event is one ``data:``
line; chat messages also carry ``id: <epoch>:<offset>``, which the browser's EventSource sends
back as ``Last-Event-ID`` when it reconnects. Events without an offset (typing, joins) carry no
id, which leaves the client's last id unchanged, as the resume point must be.

The epoch is in the id because an offset alone does not name a message: after Redis lost a room
(a restart on an older snapshot, an empty one), the room's new epoch hands out offsets 1, 2, ...
again, and a stream resumed after offset 3 of the old epoch would silently skip the new one's
first three messages. With the epoch the node says ``epoch_changed`` instead. A bare offset (an
id from before) is still accepted: it resumes as before, without that check.
"""

from __future__ import annotations

from typing import Final

# A comment line: keeps proxies and the client's idle timers from closing a quiet stream.
HEARTBEAT: Final = b": ping\n\n"
MAX_LAST_EVENT_ID: Final = 2**53


# Epochs are short hex names (roomcast.broker); an id's epoch longer than this is not ours.
MAX_EPOCH_CHARS: Final = 64
_EPOCH_FIELD: Final = b'"epoch":"'


def event(data: bytes, event_id: int = 0) -> bytes:
    """One event; ``event_id`` (the message's offset) 0 means none (events that are not kept in
    history). A message's epoch, the last field of its JSON as the broker completes it, goes
    into the id with the offset."""
    if b"\n" in data or b"\r" in data:
        # Not produced by roomcast's encoders, but the format would break: one data line each.
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        body = b"".join(b"data: " + line + b"\n" for line in lines)
    else:
        body = b"data: " + data + b"\n"
    if event_id:
        return b"id: " + _message_id(data, event_id) + b"\n" + body + b"\n"
    return body + b"\n"


def _message_id(data: bytes, offset: int) -> bytes:
    # Found from the end (the field is last, or next to last in a tombstone): a few bytes
    # looked at, whatever the text's length.
    at = data.rfind(_EPOCH_FIELD)
    if at >= 0:
        start = at + len(_EPOCH_FIELD)
        end = data.find(b'"', start)
        epoch = data[start:end]
        if 0 < end - start <= MAX_EPOCH_CHARS and epoch.isalnum():
            return b"%b:%d" % (epoch, offset)
    return b"%d" % offset


def retry(milliseconds: int) -> bytes:
    """Tells EventSource how long to wait before reconnecting."""
    return b"retry: %d\n\n" % milliseconds


def parse_last_event_id(raw: str | None) -> tuple[int, str | None] | None:
    """The offset to resume after and its epoch (None for a bare offset), or None (absent, or
    not an id we could have sent)."""
    if raw is None:
        return None
    value = raw.strip()
    epoch, colon, offset_text = value.rpartition(":")
    if colon and not (0 < len(epoch) <= MAX_EPOCH_CHARS and epoch.isascii() and epoch.isalnum()):
        return None
    if not offset_text.isascii() or not offset_text.isdigit() or len(offset_text) > 16:
        return None
    offset = int(offset_text)
    if offset > MAX_LAST_EVENT_ID:
        return None
    return offset, epoch if colon else None
