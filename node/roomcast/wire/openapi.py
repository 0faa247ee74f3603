"""The OpenAPI 3.1 document of the HTTP API, served at ``/api/openapi.json``.

Kept next to the code and checked against the running node by the tests (schemathesis), so the
document and the server cannot drift apart.
"""

from __future__ import annotations

import functools
from typing import Any, Final

from roomcast import __version__
from roomcast.wire.api import (
    MAX_BAN_SECONDS,
    MAX_BROADCAST_ROOMS,
    MAX_HEAD_BYTES,
    MAX_ROOMS_LIMIT,
    MAX_TARGET_LENGTH,
)
from roomcast.wire.control import MAX_REASON_LENGTH, MAX_USER_LENGTH
from roomcast.wire.http_heads import MAX_HEADERS
from roomcast.wire.protocol import MAX_CURSOR_LENGTH, MAX_HISTORY_LIMIT, MAX_PRESENCE_PAGE

_ROOM_PATTERN: Final = "^[A-Za-z0-9_.:@-]{1,64}$"
# As the server checks it after NFKC (Python's Unicode \\w), not blank, no space at either end or
# two in a row. JSON Schema's regex dialect (ECMA-262) reads \\w as ASCII only, so a validator
# built from the document accepts the ASCII names; the description says what else the server
# takes (one script per name, also checked, is beyond a pattern).
_USERNAME_PATTERN: Final = r"^(?=.*\S)(?! )(?!.*  )(?!.* $)[\w .@'-]{1,32}$"
_USERNAME_RULE: Final = (
    "1-32 letters or digits (of any one script: Python's Unicode \\w, where JSON Schema's "
    "pattern dialect reads ASCII only), spaces or . @ - _ ', after NFKC normalization; not "
    "blank, no space at either end or two in a row, nothing invisible"
)
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
    "431": _error(
        f"Request head (line and headers) larger than {MAX_HEAD_BYTES // 1024} KiB, "
        f"or more than {MAX_HEADERS} headers"
    ),
}
_COMMON_ERRORS: Final = {
    "401": _error("No credential, or a bad one (API key or token), when the node requires one"),
    "403": _error(
        "Origin not allowed, the token does not allow this room, or its user is banned from it"
    ),
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
            "user_id": {
                "type": "string",
                "description": "the author's user id; none on a message posted over HTTP "
                "with an API key or in open mode, or written by a node of an earlier release",
            },
            "message_id": {
                "type": "string",
                "description": "in rooms with a publish hook: the id the hook was given",
            },
        },
    }
    tombstone = {
        "type": "object",
        "required": ["type", "room", "offset", "epoch", "deleted"],
        "description": "a message deleted through the server API (no text, no username)",
        "properties": {
            "type": {"const": "message"},
            "room": string,
            "offset": offset,
            "epoch": string,
            "deleted": {"const": True},
        },
    }
    reason = {"type": "string", "maxLength": MAX_REASON_LENGTH}
    return {
        **_server_api_schemas(string, offset, reason),
        "Tombstone": tombstone,
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
                    "names the author itself (a username sent with one is ignored). "
                    + _USERNAME_RULE,
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
                "messages": {
                    "type": "array",
                    "items": {"anyOf": [_ref("Message"), _ref("Tombstone")]},
                },
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
                            "user_ids": {
                                "type": "object",
                                "additionalProperties": {"type": "integer", "minimum": 1},
                                "description": "how many of the connections each user under "
                                "this name holds, by the user_id of the events about it; "
                                "connections a node of an earlier release wrote have none",
                            },
                        },
                    },
                },
                # A page (asked with limit/after, or any answer for a big room) adds these.
                "total_members": {"type": "integer", "minimum": 0},
                "total_connections": {"type": "integer", "minimum": 0},
                "next": {
                    "type": ["string", "null"],
                    "description": "the `after` of the next page; null: this was the last",
                },
            },
        },
    }


def _server_api_schemas(
    string: dict[str, Any], offset: dict[str, Any], reason: dict[str, Any]
) -> dict[str, Any]:
    told = {"type": "integer", "minimum": 0, "description": "nodes that got the order"}
    until = {"type": "integer", "description": "ms since the Unix epoch (Redis' clock)"}
    room = {"type": "string", "pattern": _ROOM_PATTERN}
    return {
        "DisconnectOrder": {
            "type": "object",
            "properties": {
                "reason": reason,
                "reconnect": {
                    "type": "boolean",
                    "description": "true (default): close 4002, clients may reconnect; "
                    "false: close 4003, clients stop",
                },
            },
        },
        "Disconnected": {
            "type": "object",
            "required": ["user", "nodes_told"],
            "properties": {"user": string, "nodes_told": told},
        },
        "RemoveOrder": {"type": "object", "properties": {"reason": reason}},
        "Removed": {
            "type": "object",
            "required": ["room", "user", "nodes_told"],
            "properties": {"room": string, "user": string, "nodes_told": told},
        },
        "BanOrder": {
            "type": "object",
            "required": ["seconds"],
            "properties": {
                "seconds": {"type": "integer", "minimum": 1, "maximum": MAX_BAN_SECONDS},
                "reason": reason,
            },
        },
        "BanSet": {
            "type": "object",
            "required": ["room", "user", "until"],
            "properties": {"room": string, "user": string, "until": until, "nodes_told": told},
        },
        "Bans": {
            "type": "object",
            "required": ["room", "bans"],
            "properties": {
                "room": string,
                "bans": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["user", "until", "reason"],
                        "properties": {"user": string, "until": until, "reason": string},
                    },
                },
            },
        },
        "Deleted": {
            "type": "object",
            "required": ["room", "epoch", "offset"],
            "properties": {"room": string, "epoch": string, "offset": offset},
        },
        "Cleared": {
            "type": "object",
            "required": ["room", "epoch"],
            "properties": {"room": string, "epoch": string, "up_to_offset": offset},
        },
        "BroadcastOrder": {
            "type": "object",
            "required": ["rooms", "text", "username"],
            "properties": {
                "rooms": {
                    "type": "array",
                    "items": room,
                    "minItems": 1,
                    "maxItems": MAX_BROADCAST_ROOMS,
                },
                "text": string,
                "username": {
                    "type": "string",
                    "pattern": _USERNAME_PATTERN,
                    "description": _USERNAME_RULE,
                },
            },
        },
        "BroadcastResults": {
            "type": "object",
            "required": ["results"],
            "properties": {
                "results": {
                    "type": "array",
                    "items": {
                        "anyOf": [
                            {
                                "type": "object",
                                "required": ["room", "epoch", "offset"],
                                "properties": {"room": string, "epoch": string, "offset": offset},
                            },
                            {
                                "type": "object",
                                "required": ["room", "code", "reason"],
                                "properties": {"room": string, "code": string, "reason": string},
                            },
                        ]
                    },
                }
            },
        },
        "Rooms": {
            "type": "object",
            "required": ["rooms", "next_cursor"],
            "properties": {
                "rooms": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["room", "members", "connections"],
                        "properties": {
                            "room": string,
                            "members": {"type": "integer", "minimum": 1},
                            "connections": {"type": "integer", "minimum": 1},
                        },
                    },
                },
                "next_cursor": {
                    "type": ["string", "null"],
                    "description": "pass as ?cursor= for the next page; null on the last",
                },
            },
        },
        "Cluster": {
            "type": "object",
            "required": ["nodes"],
            "properties": {
                "nodes": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": [
                            "node",
                            "instance",
                            "connections",
                            "rooms",
                            "ready",
                            "version",
                            "uptime_s",
                        ],
                        "properties": {
                            "node": string,
                            "instance": string,
                            "connections": {"type": "integer", "minimum": 0},
                            "rooms": {"type": "integer", "minimum": 0},
                            "ready": {"type": "boolean"},
                            "version": string,
                            "uptime_s": {"type": "number", "minimum": 0},
                        },
                    },
                }
            },
        },
    }


_USER_PARAMETER: Final = {
    "name": "user",
    "in": "path",
    "required": True,
    "description": "a token's `sub` (a username in open mode), percent-encoded",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_USER_LENGTH},
}
_ADMIN_SECURITY: Final[list[dict[str, list[str]]]] = [{}, {"bearer": []}, {"apiKey": []}]
_ADMIN_ERRORS: Final = {
    "401": _error("No API key, or an unknown one (when the node has API keys or tokens)"),
    "403": _error("A user token: the server API takes API keys only; or origin not allowed"),
    "404": _error("No such endpoint, or an invalid room or user"),
    "429": _error("Too many requests from this caller (see Retry-After)"),
    "503": _error("Redis is unavailable: nothing was done"),
    **_SIZE_ERRORS,
}
_BODY_TIMEOUT: Final = _error("The body did not come whole within ROOMCAST_HANDSHAKE_TIMEOUT")
_BODY_ERRORS: Final = {
    "400": _error("The body is not what the operation takes"),
    "408": _BODY_TIMEOUT,
    "413": _error("Body larger than ROOMCAST_MAX_FRAME_BYTES"),
    "415": _error("Body is not application/json"),
}


def _admin(
    operation_id: str,
    summary: str,
    parameters: list[dict[str, Any]],
    answer: tuple[str, str, str | None],
    *,
    body: str | None = None,
    body_required: bool = True,
    errors: dict[str, Any] | None = None,
) -> dict[str, Any]:
    status, description, schema = answer
    response: dict[str, Any] = {"description": description}
    if schema is not None:
        response["content"] = {_JSON: {"schema": _ref(schema)}}
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["server API"],
        "parameters": parameters,
        "security": _ADMIN_SECURITY,
        "responses": {status: response, **_ADMIN_ERRORS, **(errors or {})},
    }
    if body is not None:
        operation["requestBody"] = {
            "required": body_required,
            "content": {_JSON: {"schema": _ref(body)}},
        }
        operation["responses"].update(_BODY_ERRORS)
    return operation


# nginx's answer to a request that changes something when the node that took it never answered
# (loadbalancer/nginx.conf.template): it may have been done, so not 503 `unavailable`, which
# would have its sender do it again.
_NEVER_ANSWERED: Final = _error(
    "unconfirmed, from nginx: the node that took the request never answered (it died, or "
    "stalled past nginx's read timeout); it may or may not have been done"
)


def _through_nginx(paths: dict[str, Any]) -> None:
    """Gives every operation of ``paths`` that changes something nginx's 504."""
    for methods in paths.values():
        for method, operation in methods.items():
            if method not in ("get", "head"):
                operation["responses"].setdefault("504", _NEVER_ANSWERED)


def _server_api_paths() -> dict[str, Any]:
    offset_parameter = {
        "name": "offset",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 1, "maximum": 2**53},
    }
    return {
        "/api/users/{user}/disconnect": {
            "post": _admin(
                "disconnectUser",
                "Close every connection of a user, on every node",
                [_USER_PARAMETER],
                ("202", "Ordered on every node", "Disconnected"),
                body="DisconnectOrder",
                body_required=False,
            )
        },
        "/api/rooms/{room}/members/{user}/remove": {
            "post": _admin(
                "removeMember",
                "Take a user out of a room, on every node",
                [_ROOM_PARAMETER, _USER_PARAMETER],
                ("202", "Ordered on every node", "Removed"),
                body="RemoveOrder",
                body_required=False,
            )
        },
        "/api/rooms/{room}/bans/{user}": {
            "put": _admin(
                "banMember",
                "Remove a user from a room and refuse its joins for a while",
                [_ROOM_PARAMETER, _USER_PARAMETER],
                ("200", "Banned (and removed on every node)", "BanSet"),
                body="BanOrder",
            ),
            "delete": _admin(
                "unbanMember",
                "Lift a ban",
                [_ROOM_PARAMETER, _USER_PARAMETER],
                ("204", "No ban any more", None),
            ),
        },
        "/api/rooms/{room}/bans": {
            "get": _admin(
                "listBans",
                "The bans in force in a room, soonest to end first",
                [_ROOM_PARAMETER],
                ("200", "Bans", "Bans"),
            )
        },
        "/api/rooms/{room}/messages/{offset}": {
            "delete": _admin(
                "deleteMessage",
                "Delete one message: history, recovery and event streams keep a tombstone",
                [_ROOM_PARAMETER, offset_parameter],
                ("200", "Deleted; members got message_deleted", "Deleted"),
            )
        },
        "/api/rooms": {
            "get": _admin(
                "listRooms",
                "Rooms with members on any node, by name, a page at a time",
                [
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ROOMS_LIMIT},
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "required": False,
                        "description": "next_cursor of the previous page",
                        "schema": {"type": "string", "pattern": _ROOM_PATTERN},
                    },
                ],
                ("200", "One page of rooms", "Rooms"),
                errors={"400": _error("limit or cursor is malformed")},
            )
        },
        "/api/broadcast": {
            "post": _admin(
                "broadcast",
                "One message into many rooms, each with its own offset",
                [],
                ("201", "Published (or refused) room by room", "BroadcastResults"),
                body="BroadcastOrder",
            )
        },
        "/api/cluster": {
            "get": _admin(
                "clusterInfo",
                "The live nodes: connections, rooms, readiness, version, uptime",
                [],
                ("200", "Every live node, as of its last heartbeat", "Cluster"),
            )
        },
    }


@functools.cache
def document() -> dict[str, Any]:
    security: list[dict[str, list[str]]] = [{}, {"bearer": []}, {"apiKey": []}, {"tokenQuery": []}]
    openapi: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "roomcast HTTP API",
            "version": __version__,
            "description": "Publish into chat rooms, read their presence and history, and "
            "follow them as Server-Sent Events; govern them with the server API (API keys "
            "only): disconnect, remove, ban, delete, clear, broadcast, list rooms and nodes. "
            "WebSocket clients use /chat instead.",
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
                        "408": _BODY_TIMEOUT,
                        "413": _error("Body larger than ROOMCAST_MAX_FRAME_BYTES"),
                        "415": _error("Body is not application/json"),
                        "503": _error("Redis is unavailable: the message was not published"),
                        "504": _error(
                            "unconfirmed: Redis's reply was lost and the message's fate could"
                            " not be learnt, or (from nginx) the node that took the request"
                            " never answered; it may or may not have been published"
                        ),
                    },
                },
                "delete": _admin(
                    "clearHistory",
                    "Clear the room's history (offsets go on); members get history_cleared",
                    [_ROOM_PARAMETER],
                    ("200", "Cleared", "Cleared"),
                ),
            },
            "/api/rooms/{room}/presence": {
                "get": {
                    "operationId": "getPresence",
                    "summary": "Who is in the room, on every node (by pages in a big room)",
                    "parameters": [
                        _ROOM_PARAMETER,
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "description": "a page of at most this many names (default 100)",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_PRESENCE_PAGE,
                            },
                        },
                        {
                            "name": "after",
                            "in": "query",
                            "required": False,
                            "description": "the page after this username (the last page's next)",
                            "schema": {
                                "type": "string",
                                "maxLength": MAX_CURSOR_LENGTH,
                            },
                        },
                    ],
                    "security": security,
                    "responses": {
                        "200": {
                            "description": "Members and their connection counts",
                            "content": {_JSON: {"schema": _ref("Presence")}},
                        },
                        **_COMMON_ERRORS,
                        "400": _error("limit or after is malformed"),
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
                    "WebSocket join). Chat messages carry `id: <epoch>:<offset>`; reconnecting "
                    "with `Last-Event-ID` (EventSource does it by itself) resumes after it "
                    "without gap or duplicate, or says `epoch_changed` when the room started a "
                    "new epoch meanwhile (a bare offset is accepted too, without that check). A "
                    "comment line arrives every ROOMCAST_SSE_HEARTBEAT seconds.",
                    "parameters": [
                        _ROOM_PARAMETER,
                        {
                            "name": "Last-Event-ID",
                            "in": "header",
                            "required": False,
                            "schema": {
                                "type": "string",
                                "pattern": "^([A-Za-z0-9]{1,64}:)?[0-9]{1,16}$",
                            },
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
                        "503": _error(
                            "Redis is unavailable, or (`too_many_rooms`) the node holds "
                            "ROOMCAST_MAX_ROOMS_PER_NODE rooms and not this one"
                        ),
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
            **_server_api_paths(),
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
    _through_nginx(openapi["paths"])
    return openapi
