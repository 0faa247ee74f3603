"""The HTTP API's requests and answers, without I/O: routing, validation, JSON bodies.

Endpoints (documented in :mod:`roomcast.wire.openapi`):
    POST /api/rooms/{room}/messages   publish a chat message; answers its offset
    GET  /api/rooms/{room}/presence   who is in the room, on every node
    GET  /api/rooms/{room}/history    the last messages kept (``?limit=K``)
    GET  /api/rooms/{room}/events     the room as a Server-Sent Events stream
    GET  /api/openapi.json            the OpenAPI document
Every error is JSON: ``{"code": C, "reason": text}``, ``code`` as in WebSocket error frames.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qs, unquote

import orjson

from roomcast.wire import protocol
from roomcast.wire.codes import ErrorCode
from roomcast.wire.protocol import MAX_HISTORY_LIMIT, ProtocolError

API_PREFIX: Final = "/api/"
MAX_TARGET_LENGTH: Final = 2048
MAX_HEAD_BYTES: Final = 16 * 1024  # request line and headers; more is answered 431


class Endpoint(enum.Enum):
    POST_MESSAGE = "post_message"
    PRESENCE = "presence"
    HISTORY = "history"
    EVENTS = "events"
    OPENAPI = "openapi"


# The methods each endpoint answers (HEAD goes with GET).
_METHODS: Final = {
    Endpoint.POST_MESSAGE: ("POST",),
    Endpoint.PRESENCE: ("GET", "HEAD"),
    Endpoint.HISTORY: ("GET", "HEAD"),
    Endpoint.EVENTS: ("GET",),
    Endpoint.OPENAPI: ("GET", "HEAD"),
}
_ROOM_ENDPOINTS: Final = {
    "messages": Endpoint.POST_MESSAGE,
    "presence": Endpoint.PRESENCE,
    "history": Endpoint.HISTORY,
    "events": Endpoint.EVENTS,
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


@dataclass(frozen=True, slots=True)
class Route:
    endpoint: Endpoint
    room: str | None
    query: dict[str, list[str]] = field(default_factory=dict)

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
    endpoint: Endpoint | None = None
    room: str | None = None
    if path == "/api/openapi.json":
        endpoint = Endpoint.OPENAPI
    elif len(parts) == 5 and parts[1] == "api" and parts[2] == "rooms":
        endpoint = _ROOM_ENDPOINTS.get(parts[4])
        if endpoint is not None:
            try:
                room = protocol.validate_room(unquote(parts[3], errors="strict"))
            except (ProtocolError, UnicodeDecodeError):
                raise ApiError(
                    404, "invalid_room", "room names are 1-64 characters of A-Z a-z 0-9 _ . : @ -"
                ) from None
    if endpoint is None:
        raise ApiError(404, ErrorCode.NOT_FOUND, f"no such endpoint: {path[:100]}")
    allowed = _METHODS[endpoint]
    if method not in allowed:
        raise ApiError(
            405,
            "method_not_allowed",
            f"{path[:100]} answers {', '.join(allowed)}",
            (("Allow", ", ".join(allowed)),),
        )
    return Route(endpoint, room, query)


def history_limit(route: Route, default: int) -> int:
    raw = route.query_value("limit")
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_HISTORY_LIMIT:
        raise ApiError(400, ErrorCode.INVALID_LIMIT, f"limit must be 1-{MAX_HISTORY_LIMIT}")
    return int(raw)


@dataclass(frozen=True, slots=True)
class PostedMessage:
    text: str
    username: str | None


def parse_posted_message(content_type: str | None, body: bytes) -> PostedMessage:
    """``{"text": T, "username": U}``: the same rules as a WebSocket message frame."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise ApiError(
            415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, "send the message as application/json"
        )
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, ErrorCode.INVALID_JSON, "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, ErrorCode.INVALID_FRAME, "body must be a JSON object")
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
