"""The three hooks roomcast's nodes call (README "Hooks"): who connects, who joins, what is said.

Every call carries ``Authorization: Bearer <ROOMCAST_HOOK_SECRET>``; anything else is refused,
so a client that finds this URL cannot ask for an identity itself.
"""

from __future__ import annotations

import hmac
import re
from http.cookies import CookieError, SimpleCookie
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from examples.chat_backend.archiver import Archiver
from examples.chat_backend.store import Store

SESSION_COOKIE = "chat_session"
TOPICS = {"lobby": "Say hello", "random": "Anything goes"}
# The publish hook's moderation: refused outright, or masked before the message gets an offset.
BLOCKED = re.compile(r"\b(spam|scam)\b", re.IGNORECASE)
MASKED = re.compile(r"\b(darn|heck)\b", re.IGNORECASE)


def session_from_cookie(header: str) -> str | None:
    cookie = SimpleCookie()
    try:
        cookie.load(header)
    except CookieError:
        return None
    morsel = cookie.get(SESSION_COOKIE)
    return morsel.value if morsel is not None else None


def dm_parties(room: str) -> tuple[str, str] | None:
    """``dm:<a>:<b>`` (names sorted) → (a, b); the convention of roomcast's room tokens."""
    parts = room.split(":")
    if len(parts) != 3 or parts[0] != "dm" or parts[1] >= parts[2]:
        return None
    return parts[1], parts[2]


def may_enter(room: str, user: str | None, moderator: bool) -> bool:
    parties = dm_parties(room)
    if room.startswith("dm:"):
        return parties is not None and (user in parties or moderator)
    return True


class HookHandlers:
    def __init__(self, store: Store, archiver: Archiver, secret: str) -> None:
        self._store = store
        self._archiver = archiver
        self._secret = f"Bearer {secret}"

    def _from_a_node(self, request: Request) -> bool:
        return hmac.compare_digest(request.headers.get("authorization", ""), self._secret)

    async def connect(self, request: Request) -> JSONResponse:
        if not self._from_a_node(request):
            return JSONResponse({"error": "not a roomcast node"}, status_code=401)
        body: dict[str, Any] = await request.json()
        session = session_from_cookie(body.get("headers", {}).get("cookie", ""))
        user = None if session is None else await self._store.session_user(session)
        if user is None:
            return JSONResponse({"result": "deny", "reason": "log in first"})
        return JSONResponse({"result": "allow", "user": user.name, "name": user.name})

    async def join(self, request: Request) -> JSONResponse:
        if not self._from_a_node(request):
            return JSONResponse({"error": "not a roomcast node"}, status_code=401)
        body: dict[str, Any] = await request.json()
        room, user = body["room"], body.get("user") or body["username"]
        if not may_enter(room, user, moderator=False):
            return JSONResponse({"result": "deny", "reason": "a private conversation"})
        until = await self._store.banned_until(room, user)
        if until is not None:
            reason = f"you are banned from {room} until {until:%H:%M:%S} UTC"
            return JSONResponse({"result": "deny", "reason": reason})
        self._archiver.follow(room)
        data = {"topic": TOPICS.get(room, ""), "stored": await self._store.count(room)}
        return JSONResponse({"result": "allow", "data": data})

    async def publish(self, request: Request) -> JSONResponse:
        if not self._from_a_node(request):
            return JSONResponse({"error": "not a roomcast node"}, status_code=401)
        body: dict[str, Any] = await request.json()
        room, text = body["room"], body["text"]
        user = body.get("user") or body["username"]
        if await self._store.banned_until(room, user) is not None:
            return JSONResponse({"result": "deny", "reason": "you are banned from this room"})
        if BLOCKED.search(text):
            return JSONResponse({"result": "deny", "reason": "that looks like spam"})
        masked = MASKED.sub(lambda m: m.group(0)[0] + "*" * (len(m.group(0)) - 1), text)
        # Stored before the answer: once roomcast publishes it, the row is there.
        await self._store.accept_message(body["message_id"], room, user, body["username"], masked)
        self._archiver.follow(room)
        if masked != text:
            return JSONResponse({"result": "rewrite", "text": masked})
        return JSONResponse({"result": "allow"})
