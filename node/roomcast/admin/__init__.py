"""An async, typed wrapper of roomcast's server API (docs/http-api.md, "Server API"), for the
application's backend. It imports nothing of the server: only :mod:`roomcast.wire` and h11.

    async with RoomcastAdmin("http://127.0.0.1:8080", api_key) as admin:
        await admin.ban("general", "user-42", seconds=600, reason="spam")
        page = await admin.rooms(limit=50)

Every method raises :class:`AdminError` (HTTP status, ``code`` from
:class:`roomcast.wire.codes.ErrorCode`, reason) when the server refuses, and ``TimeoutError``
or ``OSError`` when it cannot be reached.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from roomcast.admin.http import HttpAnswer, Origin, exchange, segment

__all__ = [
    "AdminError",
    "Ban",
    "BanSet",
    "BroadcastResult",
    "Cleared",
    "Deleted",
    "Disconnected",
    "NodeInfo",
    "Removed",
    "RoomInfo",
    "RoomcastAdmin",
    "RoomsPage",
]


class AdminError(Exception):
    """The server refused the request."""

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(f"{status} {code}: {reason}")
        self.status = status
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Disconnected:
    user: str
    nodes_told: int  # nodes whose control subscription got the order (this one included)


@dataclass(frozen=True, slots=True)
class Removed:
    room: str
    user: str
    nodes_told: int


@dataclass(frozen=True, slots=True)
class BanSet:
    room: str
    user: str
    until_ms: int  # joins refused until then (ms since the Unix epoch, Redis' clock)


@dataclass(frozen=True, slots=True)
class Ban:
    user: str
    until_ms: int
    reason: str


@dataclass(frozen=True, slots=True)
class Deleted:
    room: str
    epoch: str
    offset: int


@dataclass(frozen=True, slots=True)
class Cleared:
    room: str
    epoch: str
    up_to_offset: int


@dataclass(frozen=True, slots=True)
class BroadcastResult:
    """One room's outcome: ``epoch``/``offset`` when published, ``code``/``reason`` if not."""

    room: str
    epoch: str | None = None
    offset: int | None = None
    code: str | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.offset is not None


@dataclass(frozen=True, slots=True)
class RoomInfo:
    room: str
    members: int  # distinct usernames
    connections: int


@dataclass(frozen=True, slots=True)
class RoomsPage:
    rooms: list[RoomInfo]
    next_cursor: str | None  # None: the last page


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node: str
    instance: str
    connections: int
    rooms: int
    ready: bool
    version: str
    uptime_s: float


class RoomcastAdmin:
    """The server API of the roomcast deployment at ``base_url`` (nginx, or any one node)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``api_key``: one of ROOMCAST_API_KEYS (None only for an open development node);
        ``timeout``: seconds for each whole request."""
        self._origin = Origin.parse(base_url)
        self._headers = [("Authorization", f"Bearer {api_key}")] if api_key else []
        self._timeout = timeout
        self._ssl = ssl_context

    async def __aenter__(self) -> RoomcastAdmin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None  # no connection outlives a request

    # Connections

    async def disconnect(
        self, user: str, *, reason: str = "", reconnect: bool = True
    ) -> Disconnected:
        """Close every connection of ``user`` (a token's sub; a username in open mode) on every
        node: close 4002 when ``reconnect``, else 4003 (clients stop)."""
        body = {"reason": reason, "reconnect": reconnect}
        data = await self._call("POST", f"/api/users/{segment(user)}/disconnect", body, 202)
        return Disconnected(data["user"], data["nodes_told"])

    async def remove(self, room: str, user: str, *, reason: str = "") -> Removed:
        """Take ``user`` out of ``room`` everywhere (``removed`` to them, ``user_left`` to all)."""
        path = f"/api/rooms/{segment(room)}/members/{segment(user)}/remove"
        data = await self._call("POST", path, {"reason": reason}, 202)
        return Removed(data["room"], data["user"], data["nodes_told"])

    async def ban(self, room: str, user: str, *, seconds: int, reason: str = "") -> BanSet:
        """Remove ``user`` from ``room`` and refuse its joins (``banned``) for ``seconds``."""
        path = f"/api/rooms/{segment(room)}/bans/{segment(user)}"
        data = await self._call("PUT", path, {"seconds": seconds, "reason": reason}, 200)
        return BanSet(data["room"], data["user"], data["until"])

    async def unban(self, room: str, user: str) -> None:
        await self._call("DELETE", f"/api/rooms/{segment(room)}/bans/{segment(user)}", None, 204)

    async def bans(self, room: str) -> list[Ban]:
        data = await self._call("GET", f"/api/rooms/{segment(room)}/bans", None, 200)
        return [Ban(b["user"], b["until"], b["reason"]) for b in data["bans"]]

    # Messages

    async def delete_message(self, room: str, offset: int) -> Deleted:
        """Replace the message at ``offset`` by a tombstone; members get ``message_deleted``."""
        path = f"/api/rooms/{segment(room)}/messages/{offset}"
        data = await self._call("DELETE", path, None, 200)
        return Deleted(data["room"], data["epoch"], data["offset"])

    async def clear_history(self, room: str) -> Cleared:
        data = await self._call("DELETE", f"/api/rooms/{segment(room)}/messages", None, 200)
        return Cleared(data["room"], data["epoch"], data.get("up_to_offset", 0))

    async def broadcast(
        self, rooms: Sequence[str], text: str, username: str
    ) -> list[BroadcastResult]:
        """One message into each of ``rooms`` (at most 100), each with its own offset."""
        body = {"rooms": list(rooms), "text": text, "username": username}
        data = await self._call("POST", "/api/broadcast", body, 201)
        return [
            BroadcastResult(
                r["room"], r.get("epoch"), r.get("offset"), r.get("code"), r.get("reason")
            )
            for r in data["results"]
        ]

    # Rooms and nodes

    async def rooms(self, *, limit: int = 100, cursor: str | None = None) -> RoomsPage:
        """One page of the rooms with members, by name; pass ``next_cursor`` for the next."""
        query = f"?limit={limit}" + (f"&cursor={segment(cursor)}" if cursor else "")
        data = await self._call("GET", "/api/rooms" + query, None, 200)
        listed = [RoomInfo(r["room"], r["members"], r["connections"]) for r in data["rooms"]]
        return RoomsPage(listed, data["next_cursor"])

    async def all_rooms(self, *, page_size: int = 100) -> AsyncIterator[RoomInfo]:
        """Every active room, page after page."""
        cursor: str | None = None
        while True:
            page = await self.rooms(limit=page_size, cursor=cursor)
            for room in page.rooms:
                yield room
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def cluster(self) -> list[NodeInfo]:
        data = await self._call("GET", "/api/cluster", None, 200)
        return [
            NodeInfo(
                n["node"],
                n["instance"],
                n["connections"],
                n["rooms"],
                n["ready"],
                n["version"],
                n["uptime_s"],
            )
            for n in data["nodes"]
        ]

    async def _call(self, method: str, path: str, body: Any, expected: int) -> Any:
        answer: HttpAnswer = await exchange(
            self._origin, method, path, self._headers, body, self._timeout, self._ssl
        )
        if answer.status != expected:
            raise _error(answer)
        return answer.json()


def _error(answer: HttpAnswer) -> AdminError:
    try:
        data = answer.json()
        return AdminError(answer.status, str(data["code"]), str(data["reason"]))
    except (ValueError, TypeError, KeyError):
        return AdminError(answer.status, "http_error", answer.body[:200].decode(errors="replace"))
