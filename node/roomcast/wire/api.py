"""The HTTP API's requests and answers, without I/O: routing, validation, JSON bodies.

Endpoints (documented in :mod:`roomcast.wire.openapi`):
    POST /api/rooms/{room}/messages   publish a chat message; answers its offset
    GET  /api/rooms/{room}/presence   who is in the room, on every node
    GET  /api/rooms/{room}/history    the last messages kept (``?limit=K``)
    GET  /api/rooms/{room}/events     the room as a Server-Sent Events stream
    GET  /api/openapi.json            the OpenAPI document
The server API (an API key; effective on every node; docs/http-api.md "Server API"):
    POST   /api/users/{user}/disconnect              close the user's connections everywhere
    POST   /api/rooms/{room}/members/{user}/remove   take the user out of the room
    PUT    /api/rooms/{room}/bans/{user}             remove and refuse joins for a while
    DELETE /api/rooms/{room}/bans/{user}             lift a ban
    GET    /api/rooms/{room}/bans                    bans in force
    DELETE /api/rooms/{room}/messages/{offset}       delete one message (a tombstone stays)
    DELETE /api/rooms/{room}/messages                clear the room's history
    POST   /api/broadcast                            one message into many rooms
    GET    /api/rooms                                active rooms, paged (?limit=&cursor=)
    GET    /api/cluster                              the live nodes
Every error is JSON: ``{"code": C, "reason": text}``, ``code`` as in WebSocket error frames.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qs, unquote

import orjson

from roomcast.wire import control, protocol
from roomcast.wire.codes import ErrorCode
from roomcast.wire.frame_values import COUNTED_FROM_CHARS, MAX_FRAME_VALUES
from roomcast.wire.parse_cost import ParseClock, parse_long
from roomcast.wire.protocol import MAX_HISTORY_LIMIT, MAX_OFFSET, ProtocolError

API_PREFIX: Final = "/api/"
MAX_TARGET_LENGTH: Final = 2048
MAX_HEAD_BYTES: Final = 16 * 1024  # request line and headers; more is answered 431
MAX_BROADCAST_ROOMS: Final = 100
MAX_BAN_SECONDS: Final = 366 * 86400
DEFAULT_ROOMS_LIMIT: Final = 100
MAX_ROOMS_LIMIT: Final = 1000


class Endpoint(enum.Enum):
    POST_MESSAGE = "post_message"
    PRESENCE = "presence"
    HISTORY = "history"
    EVENTS = "events"
    OPENAPI = "openapi"
    # The server API: API keys only.
    DISCONNECT = "disconnect"
    REMOVE_MEMBER = "remove_member"
    BAN = "ban"
    UNBAN = "unban"
    LIST_BANS = "list_bans"
    DELETE_MESSAGE = "delete_message"
    CLEAR_HISTORY = "clear_history"
    BROADCAST = "broadcast"
    LIST_ROOMS = "list_rooms"
    CLUSTER = "cluster"


ADMIN_ENDPOINTS: Final = frozenset(
    {
        Endpoint.DISCONNECT,
        Endpoint.REMOVE_MEMBER,
        Endpoint.BAN,
        Endpoint.UNBAN,
        Endpoint.LIST_BANS,
        Endpoint.DELETE_MESSAGE,
        Endpoint.CLEAR_HISTORY,
        Endpoint.BROADCAST,
        Endpoint.LIST_ROOMS,
        Endpoint.CLUSTER,
    }
)

_READ: Final = ("GET", "HEAD")  # HEAD goes with GET
# Each path shape ("{room}", "{user}", "{offset}" stand for their parts): method -> endpoint.
_PATHS: Final[dict[tuple[str, ...], dict[str, Endpoint]]] = {
    ("openapi.json",): dict.fromkeys(_READ, Endpoint.OPENAPI),
    ("broadcast",): {"POST": Endpoint.BROADCAST},
    ("rooms",): dict.fromkeys(_READ, Endpoint.LIST_ROOMS),
    ("cluster",): dict.fromkeys(_READ, Endpoint.CLUSTER),
    ("users", "{user}", "disconnect"): {"POST": Endpoint.DISCONNECT},
    ("rooms", "{room}", "messages"): {
        "POST": Endpoint.POST_MESSAGE,
        "DELETE": Endpoint.CLEAR_HISTORY,
    },
    ("rooms", "{room}", "messages", "{offset}"): {"DELETE": Endpoint.DELETE_MESSAGE},
    ("rooms", "{room}", "presence"): dict.fromkeys(_READ, Endpoint.PRESENCE),
    ("rooms", "{room}", "history"): dict.fromkeys(_READ, Endpoint.HISTORY),
    ("rooms", "{room}", "events"): {"GET": Endpoint.EVENTS},
    ("rooms", "{room}", "bans"): dict.fromkeys(_READ, Endpoint.LIST_BANS),
    ("rooms", "{room}", "bans", "{user}"): {"PUT": Endpoint.BAN, "DELETE": Endpoint.UNBAN},
    ("rooms", "{room}", "members", "{user}", "remove"): {"POST": Endpoint.REMOVE_MEMBER},
}


class ApiError(Exception):
    """An answer other than success; ``code`` matches the WebSocket error codes where one fits."""

    def __init__(
        self, status: int, code: str, reason: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason
        self.headers = headers

    def body(self) -> bytes:
        return orjson.dumps({"code": self.code, "reason": self.reason})


class CostlyBody(ApiError):
    """A body refused for holding more JSON values than its request ever needs, or for a slow
    parse of values it dropped, as a WebSocket frame is (wire.frame_values, wire.parse_cost):
    its caller is charged for the parse (core.api_service)."""

    def __init__(self, max_values: int) -> None:
        reason = f"body holds more than {max_values} JSON values or repeats keys"
        super().__init__(400, ErrorCode.INVALID_FRAME, reason)


@dataclass(frozen=True, slots=True)
class Route:
    endpoint: Endpoint
    room: str | None
    query: dict[str, list[str]] = field(default_factory=dict)
    user: str | None = None
    offset: int | None = None

    def query_value(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None


def route(method: str, target: str) -> Route:
    """The endpoint a request is for, or ApiError 404/405/414."""
    if len(target) > MAX_TARGET_LENGTH:
        raise ApiError(414, ErrorCode.INVALID_REQUEST, "request target too long")
    path, _, raw_query = target.partition("?")
    try:
        query = parse_qs(raw_query, keep_blank_values=True, max_num_fields=32) if raw_query else {}
    except ValueError:
        raise ApiError(400, ErrorCode.INVALID_REQUEST, "too many query parameters") from None
    parts = path.split("/")
    methods: dict[str, Endpoint] | None = None
    values: dict[str, str] = {}
    if len(parts) >= 3 and parts[0] == "" and parts[1] == "api":
        for shape, answers in _PATHS.items():
            matched = _match(shape, parts[2:])
            if matched is not None:
                methods, values = answers, matched
                break
    if methods is None:
        raise ApiError(404, ErrorCode.NOT_FOUND, f"no such endpoint: {path[:100]}")
    room = _path_room(values["{room}"]) if "{room}" in values else None
    user = _path_user(values["{user}"]) if "{user}" in values else None
    offset = _path_offset(values["{offset}"]) if "{offset}" in values else None
    endpoint = methods.get(method)
    if endpoint is None:
        allowed = ", ".join(methods)
        raise ApiError(
            405,
            ErrorCode.METHOD_NOT_ALLOWED,
            f"{path[:100]} answers {allowed}",
            (("Allow", allowed),),
        )
    return Route(endpoint, room, query, user, offset)


def _match(shape: tuple[str, ...], parts: list[str]) -> dict[str, str] | None:
    """The parts standing for ``{room}`` etc. when ``parts`` has this shape, else None."""
    if len(shape) != len(parts):
        return None
    values = {}
    for want, got in zip(shape, parts, strict=True):
        if want.startswith("{"):
            values[want] = got
        elif want != got:
            return None
    return values


def _path_room(raw: str) -> str:
    try:
        return protocol.validate_room(unquote(raw, errors="strict"))
    except (ProtocolError, UnicodeDecodeError):
        raise ApiError(
            404, ErrorCode.INVALID_ROOM, "room names are 1-64 characters of A-Z a-z 0-9 _ . : @ -"
        ) from None


def _path_user(raw: str) -> str:
    try:
        return control.validate_user(unquote(raw, errors="strict"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(404, ErrorCode.INVALID_USER, f"invalid user: {exc}") from None


def _path_offset(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or len(raw) > 16 or not 1 <= int(raw) <= MAX_OFFSET:
        raise ApiError(404, ErrorCode.NOT_FOUND, "an offset is a whole number from 1")
    return int(raw)


def history_limit(route: Route, default: int) -> int:
    raw = route.query_value("limit")
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_HISTORY_LIMIT:
        raise ApiError(400, ErrorCode.INVALID_LIMIT, f"limit must be 1-{MAX_HISTORY_LIMIT}")
    return int(raw)


def presence_query(route: Route) -> tuple[int | None, str | None]:
    """``?limit=&after=`` of a presence page (docs/protocol.md "Big rooms"), or ApiError 400."""
    raw = route.query_value("limit")
    limit: object = raw
    if raw is not None and raw.isascii() and raw.isdigit() and len(raw) <= 6:
        limit = int(raw)
    try:
        return protocol.presence_page_request(limit, route.query_value("after"))
    except ProtocolError as exc:
        raise ApiError(400, exc.code, exc.reason) from None


@dataclass(frozen=True, slots=True)
class PostedMessage:
    text: str
    username: str | None


def json_object(
    content_type: str | None,
    body: bytes,
    *,
    optional: bool = False,
    max_values: int = MAX_FRAME_VALUES,
    clock: ParseClock | None = None,
) -> dict[str, Any]:
    """The request's JSON object body; with ``optional``, an empty body is ``{}``. A body
    longer than COUNTED_FROM_CHARS bytes may hold ``max_values`` JSON values, as a WebSocket
    frame may (wire.frame_values): 60 KB of empty arrays parse ~150 times as slowly as as much
    text. With ``clock``, its parse is timed too (wire.parse_cost)."""
    if optional and not body:  # whitespace alone is not JSON (400), nothing at all is {}
        return {}
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise ApiError(415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, "send the body as application/json")
    try:
        if len(body) <= COUNTED_FROM_CHARS:
            data: Any = orjson.loads(body)
        else:
            # Judged before the type check: a top-level array costs as much to parse.
            data, costly = parse_long(body, clock, max_values)
            if costly:
                raise CostlyBody(max_values)
    except orjson.JSONDecodeError:
        raise ApiError(400, ErrorCode.INVALID_JSON, "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, ErrorCode.INVALID_FRAME, "body must be a JSON object")
    return data


def parse_posted_message(
    content_type: str | None, body: bytes, clock: ParseClock | None = None
) -> PostedMessage:
    """``{"text": T, "username": U}``: the same rules as a WebSocket message frame."""
    return _posted(json_object(content_type, body, clock=clock))


def _posted(data: dict[str, Any]) -> PostedMessage:
    text = data.get("text")
    if not isinstance(text, str):
        raise ApiError(400, ErrorCode.INVALID_TEXT, "'text' must be a string")
    username = data.get("username")
    if username is not None or "username" in data:
        try:
            username = protocol.validate_username(username)
        except ProtocolError as exc:
            raise ApiError(400, exc.code, exc.reason) from None
    return PostedMessage(text, username)


def json_body(value: Any) -> bytes:
    return orjson.dumps(value)


def stream_opened(
    room: str, epoch: str, offset: int, recovered: bool | None, reason: str | None
) -> bytes:
    """The first event of an SSE stream: where it starts (``joined`` without a username)."""
    event: dict[str, Any] = {"type": "joined", "room": room, "epoch": epoch, "offset": offset}
    if recovered is not None:
        event["recovered"] = recovered
    if reason is not None:
        event["reason"] = reason
    return orjson.dumps(event)


# The server API's bodies and queries.


def _reason(data: dict[str, Any], default: str) -> str:
    reason = data.get("reason", default)
    if not isinstance(reason, str) or len(reason) > control.MAX_REASON_LENGTH:
        raise ApiError(
            400,
            ErrorCode.INVALID_BODY,
            f"'reason' must be a string of at most {control.MAX_REASON_LENGTH} characters",
        )
    return reason


def parse_disconnect(content_type: str | None, body: bytes) -> tuple[str, bool]:
    """``{"reason": R, "reconnect": B}``, both optional: (reason, reconnect)."""
    data = json_object(content_type, body, optional=True)
    reconnect = data.get("reconnect", True)
    if not isinstance(reconnect, bool):
        raise ApiError(400, ErrorCode.INVALID_BODY, "'reconnect' must be true or false")
    return _reason(data, "disconnected by the application"), reconnect


def parse_remove(content_type: str | None, body: bytes) -> str:
    """``{"reason": R}`` (optional): the reason the removed user is told."""
    return _reason(json_object(content_type, body, optional=True), "removed by the application")


def parse_ban(content_type: str | None, body: bytes) -> tuple[int, str]:
    """``{"seconds": S, "reason": R}``: (seconds, reason)."""
    data = json_object(content_type, body)
    seconds = data.get("seconds")
    if isinstance(seconds, float) and seconds.is_integer():
        seconds = int(seconds)  # 12.0 is a whole number in JSON
    if (
        not isinstance(seconds, int)
        or isinstance(seconds, bool)
        or not 1 <= seconds <= MAX_BAN_SECONDS
    ):
        raise ApiError(
            400, ErrorCode.INVALID_BODY, f"'seconds' must be a whole number 1-{MAX_BAN_SECONDS}"
        )
    return seconds, _reason(data, "banned by the application")


@dataclass(frozen=True, slots=True)
class Broadcast:
    rooms: tuple[str, ...]
    message: PostedMessage


def parse_broadcast(content_type: str | None, body: bytes) -> Broadcast:
    """``{"rooms": [R, ...], "text": T, "username": U}``: 1-100 distinct rooms."""
    # The rooms' names are values too: up to MAX_BROADCAST_ROOMS of them, as many fields.
    data = json_object(content_type, body, max_values=MAX_BROADCAST_ROOMS + MAX_FRAME_VALUES)
    rooms = data.get("rooms")
    if not isinstance(rooms, list) or not 1 <= len(rooms) <= MAX_BROADCAST_ROOMS:
        raise ApiError(
            400, ErrorCode.INVALID_ROOM, f"'rooms' must list 1-{MAX_BROADCAST_ROOMS} rooms"
        )
    try:
        names = tuple(dict.fromkeys(protocol.validate_room(room) for room in rooms))
    except ProtocolError as exc:
        raise ApiError(400, exc.code, exc.reason) from None
    return Broadcast(names, _posted(data))


def rooms_page(route: Route) -> tuple[int, str | None]:
    """``?limit=N&cursor=C`` of the rooms listing: (limit, the room name to continue after)."""
    raw = route.query_value("limit")
    limit = DEFAULT_ROOMS_LIMIT
    if raw is not None:
        if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_ROOMS_LIMIT:
            raise ApiError(400, ErrorCode.INVALID_LIMIT, f"limit must be 1-{MAX_ROOMS_LIMIT}")
        limit = int(raw)
    cursor = route.query_value("cursor")
    if cursor is not None:
        try:
            protocol.validate_room(cursor)
        except ProtocolError:
            raise ApiError(
                400, ErrorCode.INVALID_CURSOR, "cursor must be a next_cursor from a page"
            ) from None
    return limit, cursor or None
