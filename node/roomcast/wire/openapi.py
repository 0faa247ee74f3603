"""The OpenAPI 3.1 document of the HTTP API, served at ``/api/openapi.json``.

Kept next to the code and checked against the running node by the tests (schemathesis), so the
document and the server cannot drift apart.
"""

from __future__ import annotations

import functools
from typing import Any, Final

from roomcast import __version__
from roomcast.wire.api import MAX_HEAD_BYTES, MAX_TARGET_LENGTH
from roomcast.wire.protocol import MAX_HISTORY_LIMIT

_ROOM_PATTERN: Final = "^[A-Za-z0-9_.:@-]{1,64}$"
# As the server checks it (Python's Unicode \\w), and not blank.
_USERNAME_PATTERN: Final = r"^(?=.*\S)[\w .@'-]{1,32}$"
_JSON: Final = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ref("Error")}}}


_ROOM_PARAMETER: Final = {
    "name": "room",
    "in": "path",
    "required": True,
    "description": "1-64 characters of A-Z a-z 0-9 _ . : @ -",
    "schema": {"type": "string", "pattern": _ROOM_PATTERN},
}

# Any request can run into the size limits, before it is even routed.
_SIZE_ERRORS: Final = {
    "414": _error(f"Request target (path and query) longer than {MAX_TARGET_LENGTH} bytes"),
    "431": _error(f"Request head (line and headers) larger than {MAX_HEAD_BYTES // 1024} KiB"),
}
_COMMON_ERRORS: Final = {
    "401": _error("No credential, or a bad one (API key or token), when the node requires one"),
    "403": _error("Origin not allowed, or the token does not allow this room"),
    "404": _error("No such endpoint, or an invalid room name"),
    "429": _error("Too many requests from this caller (see Retry-After)"),
    **_SIZE_ERRORS,
}


def _schemas() -> dict[str, Any]:
    string = {"type": "string"}
    offset = {"type": "integer", "minimum": 0}
    message = {
        "type": "object",
        "required": ["type", "room", "username", "text", "timestamp", "offset", "epoch"],
        "properties": {
            "type": {"const": "message"},
            "room": string,
            "username": string,
            "text": string,
            "timestamp": {"type": "integer", "description": "server time, ms since the epoch"},
            "offset": offset,
            "epoch": string,
        },
    }
    return {
        "Error": {
            "type": "object",
            "required": ["code", "reason"],
            "properties": {
                "code": {"type": "string", "description": "as in WebSocket error frames"},
                "reason": string,
            },
        },
        "NewMessage": {
            "type": "object",
            "required": ["text", "username"],
            "properties": {
                "text": string,
                "username": {
                    "type": "string",
                    "pattern": _USERNAME_PATTERN,
                    "description": "the author; may be left out with a user token, which "
                    "names the author itself (a username sent with one is ignored)",
                },
            },
        },
        "Posted": {
            "type": "object",
            "required": ["room", "epoch", "offset"],
            "properties": {"room": string, "epoch": string, "offset": offset},
        },
        "Message": message,
        "History": {
            "type": "object",
            "required": ["type", "room", "epoch", "offset", "messages"],
            "properties": {
                "type": {"const": "history"},
                "room": string,
                "epoch": string,
                "offset": {**offset, "description": "the room's latest offset"},
                "messages": {"type": "array", "items": _ref("Message")},
            },
        },
        "Presence": {
            "type": "object",
            "required": ["type", "room", "members"],
            "properties": {
                "type": {"const": "presence"},
                "room": string,
                "members": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["username", "connections"],
                        "properties": {
                            "username": string,
                            "connections": {"type": "integer", "minimum": 1},
                        },
                    },
                },
            },
        },
    }


@functools.cache
def document() -> dict[str, Any]:
    security: list[dict[str, list[str]]] = [{}, {"bearer": []}, {"apiKey": []}, {"tokenQuery": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "roomcast HTTP API",
            "version": __version__,
            "description": "Publish into chat rooms, read their presence and history, and "
            "follow them as Server-Sent Events. WebSocket clients use /chat instead.",
        },
        "paths": {
            "/api/rooms/{room}/messages": {
                "post": {
                    "operationId": "postMessage",
                    "summary": "Publish a chat message to every member of the room",
                    "parameters": [_ROOM_PARAMETER],
                    "security": security,
                    "requestBody": {
                        "required": True,
                        "content": {_JSON: {"schema": _ref("NewMessage")}},
                    },
                    "responses": {
                        "201": {
                            "description": "Published; its offset in the room",
                            "content": {_JSON: {"schema": _ref("Posted")}},
                        },
                        "400": _error("Body is not a valid message (or no username)"),
                        **_COMMON_ERRORS,
                        "413": _error("Body larger than ROOMCAST_MAX_FRAME_BYTES"),
                        "415": _error("Body is not application/json"),
                        "503": _error("Redis is unavailable: the message was not published"),
                        "504": _error(
                            "unconfirmed: Redis's reply was lost and the message's fate could"
                            " not be learnt; it may or may not have been published"
                        ),
                    },
                }
            },
            "/api/rooms/{room}/presence": {
                "get": {
                    "operationId": "getPresence",
                    "summary": "Who is in the room, on every node",
                    "parameters": [_ROOM_PARAMETER],
                    "security": security,
                    "responses": {
                        "200": {
                            "description": "Members and their connection counts",
                            "content": {_JSON: {"schema": _ref("Presence")}},
                        },
                        **_COMMON_ERRORS,
                        "503": _error("Redis is unavailable"),
                    },
                }
            },
            "/api/rooms/{room}/history": {
                "get": {
                    "operationId": "getHistory",
                    "summary": "The room's last messages, oldest first",
                    "parameters": [
                        _ROOM_PARAMETER,
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_HISTORY_LIMIT,
                            },
                        },
                    ],
                    "security": security,
                    "responses": {
                        "200": {
                            "description": "Messages kept for the room",
                            "content": {_JSON: {"schema": _ref("History")}},
                        },
                        "400": _error(f"limit is not a whole number 1-{MAX_HISTORY_LIMIT}"),
                        **_COMMON_ERRORS,
                        "503": _error("Redis is unavailable"),
                    },
                }
            },
            "/api/rooms/{room}/events": {
                "get": {
                    "operationId": "streamEvents",
                    "summary": "The room's events as Server-Sent Events",
                    "description": "The first event is a `joined` event with the room's epoch "
                    "and latest offset (and, when resuming, `recovered` and `reason` as in the "
                    "WebSocket join). Chat messages carry `id: <offset>`; reconnecting with "
                    "`Last-Event-ID` (EventSource does it by itself) resumes after it without "
                    "gap or duplicate. A comment line arrives every ROOMCAST_SSE_HEARTBEAT "
                    "seconds.",
                    "parameters": [
                        _ROOM_PARAMETER,
                        {
                            "name": "Last-Event-ID",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "pattern": "^[0-9]{1,16}$"},
                        },
                        {
                            "name": "since",
                            "in": "query",
                            "required": False,
                            "description": "the same as Last-Event-ID, for clients that cannot "
                            "set headers",
                            "schema": {"type": "integer", "minimum": 0},
                        },
                        {
                            "name": "epoch",
                            "in": "query",
                            "required": False,
                            "description": "the epoch of the offset resumed from: a changed "
                            "epoch is reported instead of resuming at a wrong offset",
                            "schema": {"type": "string", "minLength": 1, "maxLength": 64},
                        },
                    ],
                    "security": security,
                    "responses": {
                        "200": {
                            "description": "An endless text/event-stream",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        "400": _error("Last-Event-ID or epoch is malformed"),
                        **_COMMON_ERRORS,
                        "503": _error("Redis is unavailable"),
                    },
                }
            },
            "/api/openapi.json": {
                "get": {
                    "operationId": "getOpenApi",
                    "summary": "This document",
                    "security": [{}],
                    "responses": {
                        "200": {
                            "description": "The OpenAPI document",
                            "content": {_JSON: {"schema": {"type": "object"}}},
                        },
                        **_SIZE_ERRORS,
                    },
                }
            },
        },
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an API key (ROOMCAST_API_KEYS) or a user token (JWT)",
                },
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "tokenQuery": {"type": "apiKey", "in": "query", "name": "token"},
            },
        },
    }
