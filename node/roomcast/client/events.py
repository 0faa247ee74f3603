"""What a roomcast client sees: server events parsed into frozen dataclasses, and its own
connection events (connected, reconnecting, resumed, gap, send failed, closed).

Parsing never raises: a frame that is not JSON, not an object, of an unknown type or with fields
of the wrong type becomes an ``Unknown`` event holding the raw text, so a newer server (the
protocol is a strict superset over time) or a broken proxy cannot crash an application.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

import orjson

# Server → client events


@dataclass(frozen=True, slots=True)
class Welcome:
    node: str
    connection: str
    max_rooms: int | None = None
    max_frame_bytes: int | None = None
    user_id: str | None = None  # ours, as the events about us carry it


@dataclass(frozen=True, slots=True)
class Joined:
    """Our join is done; ``offset`` is the room's latest offset at that moment.

    ``recovered`` is None for a plain join, True/False for a join with ``since``; ``already``
    is True when the connection was already a member (the server then sends no position).
    """

    room: str
    username: str = ""
    epoch: str = ""
    offset: int = 0
    recovered: bool | None = None
    reason: str | None = None
    already: bool = False
    role: str | None = None  # the role a room token gave us in this room
    # A big room (docs/protocol.md "Big rooms"): no UserJoined/UserLeft/Typing, PresenceChanged
    # instead; ``connections`` is the room's size then.
    big: bool = False
    connections: int | None = None
    user_id: str | None = None  # ours in this room's events


@dataclass(frozen=True, slots=True)
class Left:
    room: str


@dataclass(frozen=True, slots=True)
class UserJoined:
    room: str
    username: str
    # Tells a namesake apart (docs/protocol.md): an opaque id of the token's sub, or a
    # connection's own in open mode; None from a server that sends none.
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class UserLeft:
    room: str
    username: str
    # Tells a namesake apart (docs/protocol.md): an opaque id of the token's sub, or a
    # connection's own in open mode; None from a server that sends none.
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """A chat message; ``deleted`` (then ``username`` and ``text`` are empty, ``timestamp`` 0)
    when the application deleted it: history and resumes hold its tombstone at its offset."""

    room: str
    username: str
    text: str
    timestamp: int
    offset: int
    epoch: str
    deleted: bool = False
    # Tells a namesake apart (docs/protocol.md): an opaque id of the token's sub, or a
    # connection's own in open mode; None from a server that sends none.
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class Disconnect:
    """The application disconnected us (server API); the close (4002, or 4003 when
    ``reconnect`` is False: the client then stops) follows."""

    reason: str
    reconnect: bool


@dataclass(frozen=True, slots=True)
class Removed:
    """The application took us out of ``room``: the client no longer counts it as joined."""

    room: str
    reason: str


@dataclass(frozen=True, slots=True)
class Banned:
    """Removed from ``room``, and joins are refused (``banned``) until ``until`` (ms)."""

    room: str
    reason: str
    until: int


@dataclass(frozen=True, slots=True)
class MessageDeleted:
    """The message at ``offset`` was deleted: drop it from what you show."""

    room: str
    epoch: str
    offset: int


@dataclass(frozen=True, slots=True)
class HistoryCleared:
    """Every message of ``room`` up to ``up_to_offset`` left its history."""

    room: str
    epoch: str
    up_to_offset: int


@dataclass(frozen=True, slots=True)
class Typing:
    room: str
    username: str
    # Tells a namesake apart (docs/protocol.md): an opaque id of the token's sub, or a
    # connection's own in open mode; None from a server that sends none.
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class Member:
    """One name in a presence answer: its connections, and of those, how many each user under
    that name holds, by the ``user_id`` their events carry (namesakes are several users; a
    ``UserJoined`` is matched to its entry by ``user_id in member.user_ids``). Connections whose
    id the server does not know (a node of a release before user ids wrote them) are counted in
    ``connections`` only; a server that sends no ids leaves ``user_ids`` empty."""

    username: str
    connections: int
    # Out of the hash (a mapping has none), so that a Member still goes in a set.
    user_ids: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}), hash=False)


@dataclass(frozen=True, slots=True)
class Presence:
    """The answer to ``presence``: the whole list, or a page of it (``paged``) with the room's
    counts and the cursor of the next page (None: the last)."""

    room: str
    members: tuple[Member, ...]
    total_members: int | None = None
    total_connections: int | None = None
    next: str | None = None

    @property
    def paged(self) -> bool:
        return self.total_members is not None


@dataclass(frozen=True, slots=True)
class PresenceChanged:
    """A big room's joins and leaves since the last one (instead of UserJoined/UserLeft), at
    most once per interval; ``big`` False: the room is small again, per-member events resume
    (ask presence to resynchronise a member list)."""

    room: str
    joined: int
    left: int
    connections: int
    big: bool


@dataclass(frozen=True, slots=True)
class History:
    room: str
    epoch: str
    offset: int
    messages: tuple[ChatMessage, ...]


@dataclass(frozen=True, slots=True)
class Error:
    """A frame of ours was refused; the connection stays open."""

    code: str
    reason: str
    room: str | None = None
    id: str | int | None = None  # the id of the frame it refuses, when that frame had one
    # Seconds until the same frame would pass, when the server says (a join over its rate).
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Ack:
    """A message of ours (sent with ``id``) was published at ``offset``."""

    id: str | int
    room: str
    epoch: str
    offset: int


@dataclass(frozen=True, slots=True)
class Loss:
    """The server's notice that messages of ``room`` it acknowledged will never reach this
    connection: offsets ``from_offset``..``to_offset`` of ``epoch`` (``to_offset`` None: to the
    end of that epoch, or up to the next message). ``reason``: ``epoch_changed`` (Redis lost
    the room's history; the room goes on in ``new_epoch`` from offset 1, None while it has no
    message yet), ``too_old`` (no longer in history) or ``unavailable`` (Redis could not be
    read in time). The client also emits a ``Gap``: reload with ``history`` if they matter."""

    room: str
    reason: str
    epoch: str
    from_offset: int
    to_offset: int | None
    new_epoch: str | None = None


@dataclass(frozen=True, slots=True)
class TokenExpiring:
    """The connection's token runs out at ``expires_at`` (ms); without a refresh the server
    closes it (4001) at ``closes_at``. A client given a token callback refreshes by itself."""

    expires_at: int
    closes_at: int


@dataclass(frozen=True, slots=True)
class Refreshed:
    """The server took our new token: the connection now lasts until ``expires_at`` (ms)."""

    expires_at: int


@dataclass(frozen=True, slots=True)
class Unknown:
    """Anything else: a type this client does not know, or a frame it could not read."""

    type: str
    raw: str
    data: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


# Client-side events: what happened to the connection itself


@dataclass(frozen=True, slots=True)
class Connected:
    node: str
    connection: str
    attempt: int  # 0: the first connection; n: after n failed or lost ones in a row


@dataclass(frozen=True, slots=True)
class Disconnected:
    code: int | None  # WebSocket close code; 1006 when the connection just died
    reason: str
    will_reconnect: bool


@dataclass(frozen=True, slots=True)
class Reconnecting:
    attempt: int
    delay: float  # seconds before the attempt
    cause: str


@dataclass(frozen=True, slots=True)
class Rejoining:
    """The client's own join of ``room`` (a rejoin after a reconnect, or a room given at start)
    was refused for now (``code``: ``rate_limited``, ``hook_unavailable``); it is sent again
    on the same connection after ``delay`` seconds (the server's ``retry_after`` plus a
    full-jitter draw), for as long as the client runs. ``attempt``: refusals in a row."""

    room: str
    attempt: int
    delay: float
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class Resumed:
    """A rejoin with ``since`` got every message missed: nothing lost, nothing repeated."""

    room: str
    epoch: str
    offset: int  # the offset the client resumed after


@dataclass(frozen=True, slots=True)
class Gap:
    """Messages of ``room`` may have been missed; reload with ``history`` if they matter.

    ``reason``: the server's ``epoch_changed``, ``too_old`` or ``overloaded`` (of a rejoin, or
    of a ``Loss`` notice on a live connection, which adds ``unavailable``); or, seen by this
    client, ``offsets_skipped`` (a live message came after a hole in the offsets).
    """

    room: str
    reason: str
    epoch: str
    offset: int  # the position the client continues from


@dataclass(frozen=True, slots=True)
class SendFailed:
    """A message given to ``send`` is given up.

    ``reason``: ``queue_full``, ``expired`` (offline too long), ``stopped`` (the client closed):
    it was never sent. ``unconfirmed``: it was sent but its echo never came back, so it may or
    may not have been delivered (resending it could duplicate it).
    """

    room: str
    text: str
    reason: str
    message_id: int


@dataclass(frozen=True, slots=True)
class Closed:
    """The last event: the client stopped and will not reconnect.

    ``status`` is the HTTP status of a refused handshake (401, 403), ``code`` the close code
    of a connection closed for a fault of ours (1003, 1007, 1008, 1009); both are None after
    ``close()`` or when the reconnect attempts ran out.
    """

    reason: str
    code: int | None = None
    status: int | None = None


ServerEvent = (
    Welcome
    | Joined
    | Left
    | UserJoined
    | UserLeft
    | ChatMessage
    | Typing
    | Presence
    | PresenceChanged
    | History
    | Error
    | Ack
    | Loss
    | TokenExpiring
    | Refreshed
    | Disconnect
    | Removed
    | Banned
    | MessageDeleted
    | HistoryCleared
    | Unknown
)
ClientEvent = (
    Connected | Disconnected | Reconnecting | Rejoining | Resumed | Gap | SendFailed | Closed
)
Event = ServerEvent | ClientEvent


class _BadField(Exception):
    pass


def _str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise _BadField(key)
    return value


def _int(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _BadField(key)
    return value


def _opt_int(data: Mapping[str, Any], key: str) -> int | None:
    return None if data.get(key) is None else _int(data, key)


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    return None if data.get(key) is None else _str(data, key)


def _opt_seconds(data: Mapping[str, Any], key: str) -> float | None:
    """A delay in seconds, or None; a value that is not a finite number >= 0 is ignored (a
    retry hint is advice: a frame must not become Unknown for a bad one)."""
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    seconds = float(value)
    return seconds if 0 <= seconds < float("inf") else None


def _opt_bool(data: Mapping[str, Any], key: str) -> bool | None:
    value = data.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise _BadField(key)


def _chat_message(data: Mapping[str, Any]) -> ChatMessage:
    if data.get("deleted") is True:
        room, offset, epoch = _str(data, "room"), _int(data, "offset"), _str(data, "epoch")
        return ChatMessage(room, "", "", 0, offset, epoch, deleted=True)
    return ChatMessage(
        _str(data, "room"),
        _str(data, "username"),
        _str(data, "text"),
        _int(data, "timestamp"),
        _int(data, "offset"),
        _str(data, "epoch"),
        user_id=_opt_str(data, "user_id"),
    )


def _joined(data: Mapping[str, Any]) -> Joined:
    if data.get("already") is True:
        return Joined(_str(data, "room"), already=True)
    return Joined(
        _str(data, "room"),
        _str(data, "username"),
        _str(data, "epoch"),
        _int(data, "offset"),
        _opt_bool(data, "recovered"),
        _opt_str(data, "reason"),
        role=_opt_str(data, "role"),
        big=_opt_bool(data, "big") is True,
        connections=_opt_int(data, "connections"),
        user_id=_opt_str(data, "user_id"),
    )


def _members(data: Mapping[str, Any]) -> tuple[Member, ...]:
    members = data.get("members")
    if not isinstance(members, list) or not all(isinstance(m, dict) for m in members):
        raise _BadField("members")
    return tuple(Member(_str(m, "username"), _int(m, "connections"), _user_ids(m)) for m in members)


def _user_ids(member: Mapping[str, Any]) -> Mapping[str, int]:
    held = member.get("user_ids")
    if held is None:
        return MappingProxyType({})
    if not isinstance(held, dict) or not all(
        isinstance(count, int) and not isinstance(count, bool) for count in held.values()
    ):
        raise _BadField("user_ids")
    return MappingProxyType(held)


def _history(data: Mapping[str, Any]) -> History:
    messages = data.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise _BadField("messages")
    return History(
        _str(data, "room"),
        _str(data, "epoch"),
        _int(data, "offset"),
        tuple(_chat_message(m) for m in messages),
    )


_PARSERS: Final[dict[str, Callable[[Mapping[str, Any]], ServerEvent]]] = {
    "welcome": lambda d: Welcome(
        _str(d, "node"),
        _str(d, "connection"),
        _opt_int(d, "max_rooms"),
        _opt_int(d, "max_frame_bytes"),
        _opt_str(d, "user_id"),
    ),
    "joined": _joined,
    "left": lambda d: Left(_str(d, "room")),
    "user_joined": lambda d: UserJoined(
        _str(d, "room"), _str(d, "username"), _opt_str(d, "user_id")
    ),
    "user_left": lambda d: UserLeft(_str(d, "room"), _str(d, "username"), _opt_str(d, "user_id")),
    "message": _chat_message,
    "typing": lambda d: Typing(_str(d, "room"), _str(d, "username"), _opt_str(d, "user_id")),
    "presence": lambda d: Presence(
        _str(d, "room"),
        _members(d),
        _opt_int(d, "total_members"),
        _opt_int(d, "total_connections"),
        _opt_str(d, "next"),
    ),
    "presence_changed": lambda d: PresenceChanged(
        _str(d, "room"),
        _int(d, "joined"),
        _int(d, "left"),
        _int(d, "connections"),
        _opt_bool(d, "big") is True,
    ),
    "history": _history,
    "error": lambda d: Error(
        _str(d, "code"),
        _str(d, "reason"),
        _opt_str(d, "room"),
        _id(d),
        _opt_seconds(d, "retry_after"),
    ),
    "token_expiring": lambda d: TokenExpiring(_int(d, "expires_at"), _int(d, "closes_at")),
    "refreshed": lambda d: Refreshed(_int(d, "expires_at")),
    "ack": lambda d: Ack(_required_id(d), _str(d, "room"), _str(d, "epoch"), _int(d, "offset")),
    "disconnect": lambda d: Disconnect(_str(d, "reason"), _opt_bool(d, "reconnect") is True),
    "removed": lambda d: Removed(_str(d, "room"), _str(d, "reason")),
    "banned": lambda d: Banned(_str(d, "room"), _str(d, "reason"), _int(d, "until")),
    "message_deleted": lambda d: MessageDeleted(
        _str(d, "room"), _str(d, "epoch"), _int(d, "offset")
    ),
    "history_cleared": lambda d: HistoryCleared(
        _str(d, "room"), _str(d, "epoch"), _int(d, "up_to_offset")
    ),
    "loss": lambda d: Loss(
        _str(d, "room"),
        _str(d, "reason"),
        _str(d, "epoch"),
        _int(d, "from_offset"),
        _opt_int(d, "to_offset"),
        _opt_str(d, "new_epoch"),
    ),
}


def _id(data: Mapping[str, Any]) -> str | int | None:
    value = data.get("id")
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return None


def _required_id(data: Mapping[str, Any]) -> str | int:
    value = _id(data)
    if value is None:
        raise _BadField("id")
    return value


def parse_event(raw: str | bytes) -> ServerEvent:
    """One server frame as an event; never raises."""
    text = raw if isinstance(raw, str) else raw.decode("utf-8", errors="replace")
    try:
        data = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):
        return Unknown("", text)
    if not isinstance(data, dict):
        return Unknown("", text)
    kind = data.get("type")
    if not isinstance(kind, str):
        return Unknown("", text, MappingProxyType(data))
    parser = _PARSERS.get(kind)
    if parser is not None:
        try:
            event: ServerEvent = parser(data)
        except _BadField:
            pass
        else:
            return event
    return Unknown(kind, text, MappingProxyType(data))
