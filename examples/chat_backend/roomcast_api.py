"""The calls this app makes to roomcast's server API (docs/http-api.md "Server API"), with its
API key."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from examples.chat_backend.http import request


class RoomcastApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"roomcast answered {status}: {body}")
        self.status = status
        self.body = body


class RoomcastApi:
    def __init__(self, base_url: str, api_key: str) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"authorization": f"Bearer {api_key}", "content-type": "application/json"}

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        payload = None if body is None else json.dumps(body).encode()
        status, answer = await request(f"{self._base}{path}", method, self._headers, payload)
        parsed = json.loads(answer) if answer else None
        if status >= 300:
            raise RoomcastApiError(status, parsed)
        return parsed

    async def delete_message(self, room: str, offset: int) -> Any:
        return await self._call("DELETE", f"/api/rooms/{quote(room)}/messages/{offset}")

    async def remove(self, room: str, user: str, reason: str) -> Any:
        path = f"/api/rooms/{quote(room)}/members/{quote(user)}/remove"
        return await self._call("POST", path, {"reason": reason})

    async def ban(self, room: str, user: str, seconds: int, reason: str) -> Any:
        path = f"/api/rooms/{quote(room)}/bans/{quote(user)}"
        return await self._call("PUT", path, {"seconds": seconds, "reason": reason})

    async def disconnect(self, user: str, reason: str, reconnect: bool) -> Any:
        path = f"/api/users/{quote(user)}/disconnect"
        return await self._call("POST", path, {"reason": reason, "reconnect": reconnect})
