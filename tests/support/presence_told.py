"""What each watching member was told of presence (``user_joined``, ``user_left``) up to a
message sent after a fault: everything a room was told before it comes first, on every node."""

from __future__ import annotations

from tests.support.wsclient import Client, Event, scaled


async def presence_until(watchers: list[Client], text: str) -> list[list[Event]]:
    """Each watcher's presence events up to the message ``text`` (already sent)."""
    told: list[list[Event]] = []
    for watcher in watchers:
        events: list[Event] = []

        def mark(event: Event, into: list[Event] = events) -> bool:
            into.append(event)
            return event["type"] == "message" and event.get("text") == text

        await watcher.recv_where(mark, timeout=scaled(10))
        told.append([e for e in events if e["type"] in ("user_left", "user_joined")])
    return told
