"""The JSON wire protocol of the WebSocket: client frames in, server events out. No I/O here.

Client → server (the article's protocol, plus a strict superset; docs/protocol.md):
    {"type": "join", "room": R, "username": U, ["since": {"epoch": E, "offset": N}],
     ["room_token": JWT granting R]}
    {"type": "message", "text": T, ["room": R], ["timestamp": ignored]}
    {"type": "typing", ["room": R]}
    {"type": "leave", ["room": R]}
    {"type": "history", ["room": R], ["limit": N]}
    {"type": "presence", ["room": R], ["limit": N], ["after": username]}
    any of them with ["id": client's request id], echoed in the answer it causes
Server → client: welcome, joined, left, ack, user_joined, user_left, message, typing, history,
presence, presence_changed (big rooms), error, and from the server API: disconnect, removed,
banned, message_deleted, history_cleared. Unknown fields are ignored, so clients may send more
than we read. Every code an error carries is in :mod:`roomcast.wire.codes`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from roomcast.wire.codes import ErrorCode, LossReason
from roomcast.wire.frame_values import COUNTED_FROM_CHARS, MAX_FRAME_VALUES
from roomcast.wire.parse_cost import ParseClock, parse_long
from roomcast.wire.recovery import Since
from roomcast.wire.usernames import UsernameError, normalize_username

ROOM_PATTERN: Final = re.compile(r"[A-Za-z0-9_.:@\-]{1,64}")
# The most messages one `history` request (WebSocket or HTTP) may ask for.
MAX_HISTORY_LIMIT: Final = 10_000


class ProtocolError(Exception):
    """A client frame that is rejected with an error frame; the connection stays open."""

    def __init__(
        self, code: str, reason: str, room: str | None = None, request_id: RequestId = None
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.room = room
        self.request_id = request_id


class CostlyFrame(ProtocolError):
    """A frame refused for holding more JSON values than any command (wire.frame_values), or
    for a slow parse of values it dropped (wire.parse_cost): its parse cost the node far more
    than its bytes were charged, so its client pays more."""


# A client's own id for a frame (optional): echoed in the reply, ack or error it causes.
RequestId = str | int | None


@dataclass(frozen=True, slots=True)
class Join:
    room: str
    username: str | None  # None only when absent; with auth on, the token names the user
    since: Since | None = None
    request_id: RequestId = None
    room_token: str | None = None  # the application's grant of this one room (issue 16)


@dataclass(frozen=True, slots=True)
class Leave:
    room: str | None
    request_id: RequestId = None


@dataclass(frozen=True, slots=True)
class Message:
    text: str
    room: str | None
    request_id: RequestId = None


@dataclass(frozen=True, slots=True)
class Typing:
    room: str | None
    request_id: RequestId = None


@dataclass(frozen=True, slots=True)
class History:
    room: str | None
    limit: int | None
    request_id: RequestId = None


@dataclass(frozen=True, slots=True)
class Presence:
    room: str | None
    request_id: RequestId = None
    # Paged presence (any room; a big room's answer is always paged): at most ``limit`` names
    # after the username ``after``.
    limit: int | None = None
    after: str | None = None


@dataclass(frozen=True, slots=True)
class Refresh:
    token: str
    request_id: RequestId = None


Command = Join | Leave | Message | Typing | History | Presence | Refresh

COMMAND_TYPES: Final = ("join", "leave", "message", "typing", "history", "presence", "refresh")
MAX_TOKEN_LENGTH: Final = 8192
MAX_PRESENCE_PAGE: Final = 1000  # names per presence page at most (~90 KB of JSON)
MAX_CURSOR_LENGTH: Final = 256  # a presence cursor is a username
MAX_OFFSET: Final = 2**53  # offsets are exact in every JSON client (and in Redis' Lua)


def presence_page_request(
    limit: object, after: object, room: str | None = None
) -> tuple[int | None, str | None]:
    """A presence page's ``limit`` and ``after``, or ProtocolError (also for the HTTP API)."""
    if limit is not None and (
        not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PRESENCE_PAGE
    ):
        reason = f"'limit' must be a whole number 1-{MAX_PRESENCE_PAGE}"
        raise ProtocolError(ErrorCode.INVALID_LIMIT, reason, room)
    if after is not None and (not isinstance(after, str) or len(after) > MAX_CURSOR_LENGTH):
        reason = f"'after' must be a username (at most {MAX_CURSOR_LENGTH} characters)"
        raise ProtocolError(ErrorCode.INVALID_FRAME, reason, room)
    return limit, after


def validate_room(room: object) -> str:
    """A room name as the protocol accepts it, or ProtocolError (also for the HTTP API)."""
    if not isinstance(room, str) or ROOM_PATTERN.fullmatch(room) is None:
        raise ProtocolError(
            ErrorCode.INVALID_ROOM,
            "'room' must be 1-64 characters of A-Z a-z 0-9 _ . : @ -",
        )
    return room


def validate_username(username: object) -> str:
    """The name as shown to others (NFKC), or ProtocolError saying what is wrong with it."""
    if not isinstance(username, str):
        raise ProtocolError(
            ErrorCode.INVALID_USERNAME,
            "'username' must be 1-32 letters, digits, spaces or . @ - _ '",
        )
    try:
        return normalize_username(username)
    except UsernameError as exc:
        raise ProtocolError(ErrorCode.INVALID_USERNAME, f"'username' {exc}") from None


def _room(data: dict[str, Any], required: bool) -> str | None:
    room = data.get("room")
    if room is None:
        if required:
            raise ProtocolError(ErrorCode.INVALID_ROOM, "'room' is required")
        return None
    return validate_room(room)


def _username(data: dict[str, Any]) -> str | None:
    username = data.get("username")
    if username is None and "username" not in data:
        return None
    return validate_username(username)


def _since(data: dict[str, Any]) -> Since | None:
    since = data.get("since")
    if since is None:
        return None
    if not isinstance(since, dict):
        raise ProtocolError(ErrorCode.INVALID_SINCE, '\'since\' must be {"offset": N, "epoch": E}')
    offset, epoch = since.get("offset"), since.get("epoch")
    if (
        not isinstance(offset, int)
        or isinstance(offset, bool)
        or not 0 <= offset <= MAX_OFFSET
        or not isinstance(epoch, str)
        or not 1 <= len(epoch) <= 64
    ):
        raise ProtocolError(
            ErrorCode.INVALID_SINCE,
            "'since' needs a whole 'offset' >= 0 and the 'epoch' string from a message or joined",
        )
    return Since(offset=offset, epoch=epoch)


def _request_id(data: dict[str, Any]) -> RequestId:
    # Any other "id" is ignored like every unknown field: clients that used the name for
    # something else keep working; they just get no echo.
    value = data.get("id")
    if isinstance(value, str) and 1 <= len(value) <= 64:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_OFFSET:
        return value
    return None


def parse_command(text: str, clock: ParseClock | None = None) -> Command:
    """Turn one text frame into a command, or raise ProtocolError with a clear reason (and the
    frame's ``id`` when it had a valid one, so the client can tell which frame failed). With
    ``clock``, a long frame's parse is timed too (wire.parse_cost)."""
    try:
        # The length first, inline: short frames (nearly all) are neither counted nor timed.
        # Judged before the type check: a top-level array costs as much as an object's field.
        if len(text) <= COUNTED_FROM_CHARS:
            data = orjson.loads(text)
        else:
            data, costly = parse_long(text, clock, MAX_FRAME_VALUES)
            if costly:
                raise CostlyFrame(
                    ErrorCode.INVALID_FRAME,
                    f"frame holds more than {MAX_FRAME_VALUES} JSON values or repeats keys",
                )
    except orjson.JSONDecodeError:
        raise ProtocolError(ErrorCode.INVALID_JSON, "frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError(ErrorCode.INVALID_FRAME, "frame must be a JSON object")
    request_id = _request_id(data)
    try:
        return _command(data, request_id)
    except ProtocolError as exc:
        exc.request_id = request_id
        raise


def _command(data: dict[str, Any], request_id: RequestId) -> Command:
    kind = data.get("type")
    if kind == "message":
        text_value = data.get("text")
        if not isinstance(text_value, str):
            raise ProtocolError(ErrorCode.INVALID_TEXT, "'text' must be a string")
        return Message(text=text_value, room=_room(data, required=False), request_id=request_id)
    if kind == "typing":
        return Typing(room=_room(data, required=False), request_id=request_id)
    if kind == "join":
        room = _room(data, required=True)
        assert room is not None
        room_token = data.get("room_token")
        if room_token is not None and (
            not isinstance(room_token, str) or not 1 <= len(room_token) <= MAX_TOKEN_LENGTH
        ):
            raise ProtocolError(
                ErrorCode.INVALID_ROOM_TOKEN, "'room_token' must be a token string", room
            )
        return Join(room, _username(data), _since(data), request_id, room_token)
    if kind == "leave":
        return Leave(room=_room(data, required=False), request_id=request_id)
    if kind == "history":
        limit = data.get("limit")
        if limit is not None and (
            not isinstance(limit, int)
            or isinstance(limit, bool)
            or not 1 <= limit <= MAX_HISTORY_LIMIT
        ):
            raise ProtocolError(
                ErrorCode.INVALID_LIMIT, f"'limit' must be a whole number 1-{MAX_HISTORY_LIMIT}"
            )
        return History(room=_room(data, required=False), limit=limit, request_id=request_id)
    if kind == "presence":
        room = _room(data, required=False)
        limit, after = presence_page_request(data.get("limit"), data.get("after"), room)
        return Presence(room, request_id, limit, after)
    if kind == "refresh":
        token = data.get("token")
        if not isinstance(token, str) or not 1 <= len(token) <= MAX_TOKEN_LENGTH:
            raise ProtocolError(ErrorCode.INVALID_TOKEN, "'token' must be a token string")
        return Refresh(token=token, request_id=request_id)
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.INVALID_FRAME, "'type' must be a string")
    shown = kind if len(kind) <= 32 else kind[:32] + "…"
    raise ProtocolError(
        ErrorCode.UNKNOWN_TYPE,
        f"unknown type {shown!r}; expected one of {', '.join(COMMAND_TYPES)}",
    )


# Server → client events. Each is serialized once; room events are then shared, byte for byte,
# by every recipient on every node.


def encode(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)


def welcome(
    node_id: str, connection_id: str, max_rooms: int, max_frame_bytes: int, user_id: str
) -> bytes:
    """``user_id``: this client's own, as the events about it carry it (core.user_ids)."""
    return encode(
        {
            "type": "welcome",
            "node": node_id,
            "connection": connection_id,
            "max_rooms": max_rooms,
            "max_frame_bytes": max_frame_bytes,
            "user_id": user_id,
        }
    )


def _with_user(event: dict[str, Any], user_id: str | None) -> dict[str, Any]:
    """``user_id`` tells apart users of one name (core.user_ids); None: no user to tell (a
    message the server API posted, an event rebuilt from Redis's presence)."""
    if user_id is not None:
        event["user_id"] = user_id
    return event


def _with_id(event: dict[str, Any], request_id: RequestId) -> dict[str, Any]:
    if request_id is not None:
        event["id"] = request_id
    return event


def error(
    code: str,
    reason: str,
    room: str | None = None,
    request_id: RequestId = None,
    retry_after: float | None = None,
) -> bytes:
    """A refused frame; ``retry_after``: the seconds until the same frame would pass (a join
    over its join rate says it, so a client's automatic rejoin waits exactly that long)."""
    event: dict[str, Any] = {"type": "error", "code": code, "reason": reason}
    if room is not None:
        event["room"] = room
    if retry_after is not None:
        event["retry_after"] = retry_after
    return encode(_with_id(event, request_id))


def ack(room: str, request_id: RequestId, epoch: str, offset: int) -> bytes:
    """A message with an ``id`` was published: its offset (the message itself comes too)."""
    return encode({"type": "ack", "id": request_id, "room": room, "epoch": epoch, "offset": offset})


def joined(
    room: str,
    username: str,
    epoch: str,
    offset: int,
    recovered: bool | None = None,
    reason: str | None = None,
    request_id: RequestId = None,
    data: Any = None,
    role: str | None = None,
    connections: int | None = None,
    user_id: str | None = None,
) -> bytes:
    event: dict[str, Any] = {
        "type": "joined",
        "room": room,
        "username": username,
        "epoch": epoch,
        "offset": offset,
    }
    _with_user(event, user_id)
    if role is not None:
        event["role"] = role  # from the join's room token
    if recovered is not None:
        event["recovered"] = recovered
    if reason is not None:
        event["reason"] = reason
    if data is not None:
        # The join hook's initial data for this joiner (README "Hooks").
        event["data"] = data
    if connections is not None:
        # A big room: no user_joined/user_left/typing here, presence_changed instead.
        event["big"] = True
        event["connections"] = connections
    return encode(_with_id(event, request_id))


def left(room: str, request_id: RequestId = None) -> bytes:
    return encode(_with_id({"type": "left", "room": room}, request_id))


def user_joined(room: str, username: str, user_id: str | None = None) -> bytes:
    return encode(_with_user({"type": "user_joined", "room": room, "username": username}, user_id))


def user_left(room: str, username: str, user_id: str | None = None) -> bytes:
    return encode(_with_user({"type": "user_left", "room": room, "username": username}, user_id))


def chat_message_prefix(
    room: str,
    username: str,
    text: str,
    timestamp_ms: int,
    message_id: str | None = None,
    user_id: str | None = None,
) -> bytes:
    """A message event up to its offset; the broker appends ``<offset>,"epoch":"<epoch>"}``.

    The offset is assigned by Redis atomically with the publication, so the JSON is completed
    there, once, and every recipient gets the same bytes. ``message_id``: the id the publish
    hook was given, so the application can tie the offset to what it stored.
    """
    event: dict[str, Any] = {
        "type": "message",
        "room": room,
        "username": username,
        "text": text,
        "timestamp": timestamp_ms,
    }
    if message_id is not None:
        event["message_id"] = message_id
    _with_user(event, user_id)
    body = encode(event)
    return body[:-1] + b',"offset":'


EPOCH_FIELD: Final = b',"epoch":"'
EVENT_END: Final = b'"}'


def complete_message(prefix: bytes, offset: int, epoch: str) -> bytes:
    """What the Redis script does, for the in-memory broker."""
    return prefix + str(offset).encode() + EPOCH_FIELD + epoch.encode() + EVENT_END


def history(
    room: str, epoch: str, offset: int, messages: list[bytes], request_id: RequestId = None
) -> bytes:
    # The stored messages are JSON we wrote; they are spliced in, not parsed and re-encoded.
    head, tail = history_parts(room, epoch, offset, request_id)
    return head + b",".join(messages) + tail


def history_parts(
    room: str, epoch: str, offset: int, request_id: RequestId = None
) -> tuple[bytes, bytes]:
    """The bytes of a history answer around its messages (``head + b",".join(messages) +
    tail``): a large answer is written in pieces, its messages read page by page."""
    head = encode(
        _with_id({"type": "history", "room": room, "epoch": epoch, "offset": offset}, request_id)
    )
    return head[:-1] + b',"messages":[', b"]}"


# A presence answer's members: each username with the user_id of each of its connections (None:
# not known, written by a node of the release before user ids).
PresenceMembers = Mapping[str, Sequence[str | None]]


def _presence_member(username: str, user_ids: Sequence[str | None]) -> dict[str, Any]:
    """One entry of a presence answer: the name and its connections, as ever, and how many of
    them each user under that name holds (namesakes are several), by the user_id the events
    about them carry. Connections whose id is not known are counted in ``connections`` only."""
    if len(user_ids) == 1:  # most names: a third of the cost of the loop below
        only = user_ids[0]
        held_one = {only: 1} if only is not None else {}
        return {"username": username, "connections": 1, "user_ids": held_one}
    held: dict[str, int] = {}
    for user_id in user_ids:
        if user_id is not None:
            held[user_id] = held.get(user_id, 0) + 1
    return {
        "username": username,
        "connections": len(user_ids),
        "user_ids": dict(sorted(held.items())),
    }


def presence(room: str, members: PresenceMembers, request_id: RequestId = None) -> bytes:
    return encode(
        _with_id(
            {
                "type": "presence",
                "room": room,
                "members": [_presence_member(name, members[name]) for name in sorted(members)],
            },
            request_id,
        )
    )


def presence_page(
    room: str,
    members: PresenceMembers,
    total_members: int,
    total_connections: int,
    next_cursor: str | None,
    request_id: RequestId = None,
) -> bytes:
    """A page of a room's presence, in username order, with the whole room's counts; ``next``
    is the ``after`` of the next page (null: this was the last)."""
    return encode(
        _with_id(
            {
                "type": "presence",
                "room": room,
                "members": [_presence_member(name, ids) for name, ids in members.items()],
                "total_members": total_members,
                "total_connections": total_connections,
                "next": next_cursor,
            },
            request_id,
        )
    )


def presence_changed(room: str, joined: int, left: int, connections: int, big: bool) -> bytes:
    """A big room's coalesced joins and leaves (instead of user_joined/user_left), at most once
    per interval; ``big`` false: the room is small again and per-member events resume."""
    return encode(
        {
            "type": "presence_changed",
            "room": room,
            "joined": joined,
            "left": left,
            "connections": connections,
            "big": big,
        }
    )


def token_expiring(expires_ms: int, closes_ms: int) -> bytes:
    """Refresh your token: this connection closes (4001) at ``closes_at`` without one."""
    return encode({"type": "token_expiring", "expires_at": expires_ms, "closes_at": closes_ms})


def refreshed(expires_ms: int, request_id: RequestId = None) -> bytes:
    return encode(_with_id({"type": "refreshed", "expires_at": expires_ms}, request_id))


def typing(room: str, username: str, user_id: str | None = None) -> bytes:
    return encode(_with_user({"type": "typing", "room": room, "username": username}, user_id))


# ``reason`` of a ``loss`` event (``codes.LossReason``).
LOSS_EPOCH_CHANGED: Final = LossReason.EPOCH_CHANGED
LOSS_TOO_OLD: Final = LossReason.TOO_OLD
LOSS_UNAVAILABLE: Final = LossReason.UNAVAILABLE
# How every ``loss`` event begins (``encode`` keeps the key order): what a node tells one by
# without decoding the JSON of each room event.
LOSS_PREFIX: Final = b'{"type":"loss",'


def loss(
    room: str,
    reason: str,
    epoch: str,
    from_offset: int,
    to_offset: int | None,
    new_epoch: str | None = None,
) -> bytes:
    """Messages of ``room`` from ``from_offset`` to ``to_offset`` (None: to the end of ``epoch``
    for ``epoch_changed``, or to the next message delivered) were published but will never be
    delivered on this connection; ``new_epoch`` (with ``epoch_changed``) is where the room
    continues, None while it has no message yet."""
    event: dict[str, Any] = {
        "type": "loss",
        "room": room,
        "reason": reason,
        "epoch": epoch,
        "from_offset": from_offset,
        "to_offset": to_offset,
    }
    if reason == LOSS_EPOCH_CHANGED:
        event["new_epoch"] = new_epoch
    return encode(event)


# Events of the server API (issue 16).


def disconnect(reason: str, reconnect: bool) -> bytes:
    """Sent before close 4002 (``reconnect``: may come back) or 4003 (must not)."""
    return encode({"type": "disconnect", "reason": reason, "reconnect": reconnect})


def removed(room: str, reason: str) -> bytes:
    """This connection is no longer in ``room`` (the others get ``user_left``)."""
    return encode({"type": "removed", "room": room, "reason": reason})


def banned(room: str, reason: str, until_ms: int) -> bytes:
    """Removed from ``room``, and a join is refused (``banned``) until ``until`` (ms)."""
    return encode({"type": "banned", "room": room, "reason": reason, "until": until_ms})


def message_deleted(room: str, epoch: str, offset: int) -> bytes:
    """What the delete script publishes (built there, in Lua; a unit test ties the two)."""
    return encode({"type": "message_deleted", "room": room, "epoch": epoch, "offset": offset})


def history_cleared(room: str, epoch: str, up_to_offset: int) -> bytes:
    """Every message up to ``up_to_offset`` left the room's history (the clear script's)."""
    return encode(
        {"type": "history_cleared", "room": room, "epoch": epoch, "up_to_offset": up_to_offset}
    )


def tombstone(room: str, offset: int, epoch: str) -> bytes:
    """What history, ``since`` recovery and SSE resume hold in place of a deleted message."""
    return encode(
        {"type": "message", "room": room, "offset": offset, "epoch": epoch, "deleted": True}
    )
