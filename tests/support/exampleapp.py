"""A signed-in user of the example backend (cookie session), for the example's tests."""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import urllib.error
import urllib.request
from typing import Any

from tests.support.wsclient import Client


class AppUser:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.jar = http.cookiejar.CookieJar()
        self._opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def _call(self, method: str, path: str, body: object | None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with self._opener.open(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    async def get(self, path: str) -> tuple[int, Any]:
        return await asyncio.to_thread(self._call, "GET", path, None)

    async def post(self, path: str, body: object | None = None) -> tuple[int, Any]:
        return await asyncio.to_thread(self._call, "POST", path, body if body is not None else {})

    async def login(self, name: str, password: str | None = None) -> AppUser:
        status, body = await self.post(
            "/login", {"username": name, "password": password or f"{name}-pass"}
        )
        assert status == 200, body
        return self

    @property
    def cookie(self) -> str:
        return "; ".join(f"{cookie.name}={cookie.value}" for cookie in self.jar)

    async def connect(self, ws_url: str) -> Client:
        """A WebSocket to roomcast that the connect hook lets in by this user's session cookie."""
        return await Client.connect(ws_url, additional_headers={"Cookie": self.cookie})

    async def history(self, room: str, limit: int = 200) -> list[dict[str, Any]]:
        status, body = await self.get(f"/api/history/{room}?limit={limit}")
        assert status == 200, body
        messages: list[dict[str, Any]] = body["messages"]
        return messages[::-1]  # oldest first
