"""Orders the server API sends to every node over the broker's control channel. No I/O here.

One JSON object per publication, written by the node that took the HTTP request and read by every
node (itself included), which then acts on its own connections:

    {"type": "disconnect", "user": U, "reason": R, "reconnect": B}
    {"type": "remove", "room": N, "user": U, "reason": R}
    {"type": "remove", "room": N, "user": U, "reason": R, "until": MS}   (a ban: until, ms)

``user`` is a token's ``sub`` (or, in open mode, a username). The channel is at-most-once like
every pub/sub publication: what a node misses while its subscriber link is down is not replayed
(a ban still holds there: joins check it in Redis).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import orjson

MAX_REASON_LENGTH: Final = 256
MAX_USER_LENGTH: Final = 128


@dataclass(frozen=True, slots=True)
class Disconnect:
    user: str
    reason: str
    reconnect: bool


@dataclass(frozen=True, slots=True)
class Remove:
    room: str
    user: str
    reason: str
    until_ms: int | None = None  # set for a ban: refused on join until then


ControlEvent = Disconnect | Remove


class ControlError(ValueError):
    """A payload on the control channel that no roomcast node wrote."""


def encode(event: ControlEvent) -> bytes:
    if isinstance(event, Disconnect):
        return orjson.dumps(
            {
                "type": "disconnect",
                "user": event.user,
                "reason": event.reason,
                "reconnect": event.reconnect,
            }
        )
    body: dict[str, Any] = {
        "type": "remove",
        "room": event.room,
        "user": event.user,
        "reason": event.reason,
    }
    if event.until_ms is not None:
        body["until"] = event.until_ms
    return orjson.dumps(body)


def parse(payload: bytes) -> ControlEvent:
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise ControlError("control payload is not JSON") from None
    if not isinstance(data, dict):
        raise ControlError("control payload is not an object")
    user, reason = data.get("user"), data.get("reason")
    if not isinstance(user, str) or not isinstance(reason, str):
        raise ControlError("control payload without user or reason")
    kind = data.get("type")
    if kind == "disconnect":
        return Disconnect(user, reason, data.get("reconnect") is True)
    if kind == "remove":
        room, until = data.get("room"), data.get("until")
        if not isinstance(room, str):
            raise ControlError("remove without a room")
        if until is not None and (not isinstance(until, int) or isinstance(until, bool)):
            raise ControlError("remove with a bad 'until'")
        return Remove(room, user, reason, until)
    raise ControlError(f"unknown control type {str(kind)[:32]!r}")


def validate_user(user: object) -> str:
    """A user as the API names one (a token's sub, or a username): 1-128 characters, none of
    them control characters. Raises ValueError saying what is wrong."""
    if not isinstance(user, str) or not 1 <= len(user) <= MAX_USER_LENGTH:
        raise ValueError(f"a user is 1-{MAX_USER_LENGTH} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in user):
        raise ValueError("a user has no control characters")
    return user


def direct_room(user_a: str, user_b: str) -> str:
    """The room of a direct conversation: ``dm:<a>:<b>``, the two ``sub``s sorted (README,
    "Sessions and private rooms"); the application issues room tokens for it."""
    first, second = sorted((user_a, user_b))
    return f"dm:{first}:{second}"


def direct_room_members(room: str) -> tuple[str, str] | None:
    """The two users of a ``dm:`` room, or None when ``room`` is not one."""
    if not room.startswith("dm:"):
        return None
    first, sep, second = room[3:].partition(":")
    if not sep or not first or not second or ":" in second:
        return None
    return first, second
