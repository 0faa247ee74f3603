"""The JSON the nodes exchange with the application's hooks (README "Hooks"). No I/O here.

A node POSTs one JSON object per call and reads one JSON object back (HTTP 200). Every answer is
checked here, field by field: a backend that answers something else is treated like one that did
not answer (the hook's fail mode decides), never trusted half-way.

    connect  → {"result": "allow", "user": S, ["name": S], ["rooms": [pattern, …]]}
               {"result": "deny", ["reason": S]}
    join     → {"result": "allow", ["data": any JSON]}   {"result": "deny", ["reason": S]}
    publish  → {"result": "allow"}   {"result": "deny", ["reason": S]}
               {"result": "rewrite", "text": S}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from roomcast.wire.usernames import UsernameError, normalize_username

HookName = Literal["connect", "join", "publish"]
HOOK_NAMES: Final[tuple[HookName, ...]] = ("connect", "join", "publish")
# The handshake headers a connect hook sees (lower-case); nothing else of the request leaves.
FORWARDED_HEADERS: Final = ("cookie", "authorization", "origin", "user-agent")
# What a reason may hold before it is cut (it is shown to the client).
MAX_REASON_CHARS: Final = 200
MAX_USER_CHARS: Final = 256
MAX_ROOM_PATTERNS: Final = 1000


class HookAnswerError(ValueError):
    """The backend answered, but not with a valid verdict for this hook."""


@dataclass(frozen=True, slots=True)
class Allow:
    data: Any = None  # join: initial data for the joiner (None: none)


@dataclass(frozen=True, slots=True)
class Deny:
    reason: str


@dataclass(frozen=True, slots=True)
class Rewrite:
    text: str


@dataclass(frozen=True, slots=True)
class ConnectAllow:
    user: str
    name: str
    rooms: tuple[str, ...] | None  # None: any room


Verdict = Allow | Deny | Rewrite | ConnectAllow


def connect_request(node: str, client_address: str, path: str, headers: Mapping[str, str]) -> bytes:
    _, _, query = path.partition("?")
    return orjson.dumps(
        {
            "hook": "connect",
            "node": node,
            "client_address": client_address,
            "query": query,
            "headers": {
                name: headers[name] for name in FORWARDED_HEADERS if headers.get(name) is not None
            },
        }
    )


def join_request(
    node: str, connection: str, room: str, user: str | None, username: str, client_address: str
) -> bytes:
    return orjson.dumps(
        {
            "hook": "join",
            "node": node,
            "connection": connection,
            "room": room,
            "user": user,
            "username": username,
            "client_address": client_address,
        }
    )


def publish_request(
    node: str,
    connection: str,
    message_id: str,
    room: str,
    user: str | None,
    username: str,
    text: str,
) -> bytes:
    # message_id is unique per message (not per attempt): a backend that stores messages can
    # use it to ignore a repeated call.
    return orjson.dumps(
        {
            "hook": "publish",
            "node": node,
            "connection": connection,
            "message_id": message_id,
            "room": room,
            "user": user,
            "username": username,
            "text": text,
        }
    )


def parse_answer(hook: HookName, body: bytes) -> Verdict:
    """The backend's verdict; raises HookAnswerError for anything else."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise HookAnswerError("the answer is not JSON") from None
    if not isinstance(answer, dict):
        raise HookAnswerError("the answer is not a JSON object")
    result = answer.get("result")
    if result == "deny":
        return Deny(_reason(answer.get("reason")))
    if result == "allow":
        if hook == "connect":
            return _connect_allow(answer)
        return Allow(answer.get("data") if hook == "join" else None)
    if result == "rewrite" and hook == "publish":
        text = answer.get("text")
        if not isinstance(text, str):
            raise HookAnswerError("a rewrite needs 'text' (a string)")
        return Rewrite(text)
    allowed = "allow, deny or rewrite" if hook == "publish" else "allow or deny"
    raise HookAnswerError(f"'result' must be {allowed}")


def _reason(value: object) -> str:
    if value is None:
        return "refused by the application"
    if not isinstance(value, str):
        raise HookAnswerError("'reason' must be a string")
    return value if len(value) <= MAX_REASON_CHARS else value[:MAX_REASON_CHARS] + "…"


def _connect_allow(answer: dict[str, Any]) -> ConnectAllow:
    user = answer.get("user")
    if not isinstance(user, str) or not 1 <= len(user) <= MAX_USER_CHARS:
        raise HookAnswerError(f"'user' must be a string of 1-{MAX_USER_CHARS} characters")
    name = answer.get("name", user)
    if not isinstance(name, str):
        raise HookAnswerError("'name' must be a string")
    try:
        name = normalize_username(name)
    except UsernameError as exc:
        raise HookAnswerError(f"'name' is not a valid username: {exc}") from None
    rooms = answer.get("rooms")
    if rooms is not None and (
        not isinstance(rooms, list)
        or len(rooms) > MAX_ROOM_PATTERNS
        or not all(isinstance(r, str) and r for r in rooms)
    ):
        raise HookAnswerError("'rooms' must be a list of room patterns")
    return ConnectAllow(user, name, tuple(rooms) if rooms is not None else None)
