"""The example backend's web application (Starlette): log-in, tokens, history, moderation, hooks."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from examples.chat_backend.archiver import Archiver
from examples.chat_backend.config import BackendConfig
from examples.chat_backend.hooks import SESSION_COOKIE, HookHandlers, dm_parties, may_enter
from examples.chat_backend.roomcast_api import RoomcastApi, RoomcastApiError
from examples.chat_backend.store import Store, User

STATIC = Path(__file__).resolve().parent / "static"
MAX_HISTORY_PAGE = 200

Handler = Callable[[Request], Awaitable[Response]]


def _error(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status)


class ChatBackend:
    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.roomcast = RoomcastApi(config.roomcast_http, config.api_key)
        self._store: Store | None = None
        self._archiver: Archiver | None = None
        self._hooks: HookHandlers | None = None

    @property
    def store(self) -> Store:
        assert self._store is not None, "not started"
        return self._store

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self._store = await Store.open(self.config.database_url)
        for name, password in self.config.users:
            await self._store.ensure_user(name, password, name in self.config.moderators)
        self._archiver = Archiver(self._store, self.config.roomcast_http, self.config.api_key)
        self._hooks = HookHandlers(self._store, self._archiver, self.config.hook_secret)
        try:
            yield
        finally:
            await self._archiver.stop()
            await self._store.close()

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/", self.index),
                Route("/moderate", self.moderate_page),
                Mount("/static", StaticFiles(directory=STATIC), name="static"),
                Route("/login", self.login, methods=["POST"]),
                Route("/logout", self.logout, methods=["POST"]),
                Route("/api/me", self.me),
                Route("/api/token", self.signed_in(self.connection_token), methods=["POST"]),
                Route("/api/room-token", self.signed_in(self.room_token), methods=["POST"]),
                Route("/api/history/{room}", self.signed_in(self.history)),
                Route("/api/moderate/rooms", self.moderator(self.rooms)),
                Route(
                    "/api/moderate/delete", self.moderator(self.delete_message), methods=["POST"]
                ),
                Route("/api/moderate/remove", self.moderator(self.remove), methods=["POST"]),
                Route("/api/moderate/ban", self.moderator(self.ban), methods=["POST"]),
                Route(
                    "/api/moderate/disconnect", self.moderator(self.disconnect), methods=["POST"]
                ),
                Route("/hooks/connect", self.hook("connect"), methods=["POST"]),
                Route("/hooks/join", self.hook("join"), methods=["POST"]),
                Route("/hooks/publish", self.hook("publish"), methods=["POST"]),
            ],
            lifespan=self.lifespan,
        )

    # Sessions

    async def current_user(self, request: Request) -> User | None:
        session = request.cookies.get(SESSION_COOKIE)
        return None if session is None else await self.store.session_user(session)

    def signed_in(self, handler: Callable[[Request, User], Awaitable[Response]]) -> Handler:
        async def checked(request: Request) -> Response:
            user = await self.current_user(request)
            if user is None:
                return _error(401, "log in first")
            return await handler(request, user)

        return checked

    def moderator(self, handler: Callable[[Request, User], Awaitable[Response]]) -> Handler:
        async def checked(request: Request) -> Response:
            user = await self.current_user(request)
            if user is None or not user.moderator:
                return _error(403, "moderators only")
            return await handler(request, user)

        return checked

    def hook(self, name: str) -> Handler:
        async def call(request: Request) -> Response:
            assert self._hooks is not None
            handler: Handler = getattr(self._hooks, name)
            return await handler(request)

        return call

    # Pages

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def moderate_page(self, request: Request) -> Response:
        user = await self.current_user(request)
        if user is None or not user.moderator:
            return RedirectResponse("/")
        return FileResponse(STATIC / "moderate.html")

    async def login(self, request: Request) -> Response:
        try:
            body = await request.json()
            name, password = str(body["username"]), str(body["password"])
        except (ValueError, KeyError, TypeError):
            return _error(400, "expected JSON {username, password}")
        user = await self.store.check_password(name, password)
        if user is None:
            return _error(401, "wrong name or password")
        session = await self.store.new_session(user.name, self.config.session_ttl)
        response = JSONResponse({"user": user.name, "moderator": user.moderator})
        response.set_cookie(
            SESSION_COOKIE,
            session,
            max_age=self.config.session_ttl,
            httponly=True,  # the page never reads it; the WebSocket handshake carries it
            samesite="lax",
        )
        return response

    async def logout(self, request: Request) -> Response:
        session = request.cookies.get(SESSION_COOKIE)
        if session is not None:
            await self.store.end_session(session)
        response = JSONResponse({"ok": True})
        response.delete_cookie(SESSION_COOKIE)
        return response

    async def me(self, request: Request) -> Response:
        user = await self.current_user(request)
        if user is None:
            return _error(401, "log in first")
        return JSONResponse(
            {"user": user.name, "moderator": user.moderator, "ws_url": self.config.public_ws_url}
        )

    # Tokens: for clients that cannot send the cookie (the Python client, curl, other hosts)

    def _sign(self, claims: dict[str, Any]) -> tuple[str, int]:
        now = int(time.time())
        expires = now + self.config.token_ttl
        token = jwt.encode(
            {**claims, "iat": now, "nbf": now, "exp": expires}, self.config.token_secret, "HS256"
        )
        return token, expires

    async def connection_token(self, request: Request, user: User) -> Response:
        # No `rooms` claim: the join hook decides room by room (direct messages: their two
        # parties only), on every node, with what the database says now.
        token, expires = self._sign({"sub": user.name, "name": user.name})
        return JSONResponse({"token": token, "expires": expires})

    async def room_token(self, request: Request, user: User) -> Response:
        try:
            room = str((await request.json())["room"])
        except (ValueError, KeyError, TypeError):
            return _error(400, "expected JSON {room}")
        if not may_enter(room, user.name, user.moderator):
            return _error(403, "not your conversation")
        role = "moderator" if user.moderator else ("party" if dm_parties(room) else "member")
        token, expires = self._sign({"sub": user.name, "room": room, "role": role})
        return JSONResponse({"room": room, "token": token, "expires": expires})

    # Long-term history, from PostgreSQL (Redis keeps only the last ROOMCAST_HISTORY_SIZE)

    async def history(self, request: Request, user: User) -> Response:
        room = request.path_params["room"]
        if not may_enter(room, user.name, user.moderator):
            return _error(403, "not your conversation")
        try:
            before = (
                int(request.query_params["before"]) if "before" in request.query_params else None
            )
            limit = min(int(request.query_params.get("limit", "50")), MAX_HISTORY_PAGE)
        except ValueError:
            return _error(400, "before and limit are numbers")
        messages = await self.store.history(room, before, max(1, limit))
        next_before = messages[-1]["id"] if len(messages) == limit else None
        return JSONResponse({"room": room, "messages": messages, "next_before": next_before})

    # Moderation, through roomcast's server API (every node, every connection of the user)

    async def rooms(self, request: Request, user: User) -> Response:
        return JSONResponse({"rooms": await self.store.rooms()})

    async def _roomcast(self, call: Awaitable[Any]) -> dict[str, Any]:
        try:
            return {"ok": True, "roomcast": await call}
        except RoomcastApiError as exc:
            return {"ok": False, "status": exc.status, "roomcast": exc.body}
        except OSError as exc:
            return {"ok": False, "status": 0, "roomcast": str(exc)}

    async def delete_message(self, request: Request, user: User) -> Response:
        body = await request.json()
        row = await self.store.message(int(body["id"]))
        if row is None:
            return _error(404, "no such message")
        await self.store.mark_deleted(row["id"])
        if row["offset"] is None:
            return JSONResponse({"ok": True, "roomcast": "not published yet"})
        answer = await self._roomcast(self.roomcast.delete_message(row["room"], row["offset"]))
        return JSONResponse(answer)

    async def remove(self, request: Request, user: User) -> Response:
        body = await request.json()
        reason = str(body.get("reason") or f"removed by {user.name}")
        answer = await self._roomcast(self.roomcast.remove(body["room"], body["user"], reason))
        return JSONResponse(answer)

    async def ban(self, request: Request, user: User) -> Response:
        body = await request.json()
        room, target, seconds = body["room"], body["user"], int(body.get("seconds", 3600))
        reason = str(body.get("reason") or f"banned by {user.name}")
        # Kept here too: the join and publish hooks refuse a banned user on every node.
        until = await self.store.ban(room, target, seconds, reason)
        answer = await self._roomcast(self.roomcast.ban(room, target, seconds, reason))
        return JSONResponse({**answer, "until": until.isoformat()})

    async def disconnect(self, request: Request, user: User) -> Response:
        body = await request.json()
        reason = str(body.get("reason") or f"disconnected by {user.name}")
        call = self.roomcast.disconnect(body["user"], reason, bool(body.get("reconnect", False)))
        return JSONResponse(await self._roomcast(call))
