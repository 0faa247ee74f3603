"""PostgreSQL: users, sessions, bans and every message, kept beyond Redis's history window.

A message row is written by the publish hook (before roomcast gives it an offset) and completed
by the archiver when the room's event stream shows it with its offset (matched by
``message_id``). Rows are never removed: a moderator's deletion sets ``deleted``, and the text of
a deleted message is never served again.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name text PRIMARY KEY,
    salt bytea NOT NULL,
    password_hash bytea NOT NULL,
    moderator boolean NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS sessions (
    id text PRIMARY KEY,
    user_name text NOT NULL REFERENCES users(name),
    expires_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS bans (
    room text NOT NULL,
    user_name text NOT NULL,
    until timestamptz NOT NULL,
    reason text NOT NULL,
    PRIMARY KEY (room, user_name)
);
CREATE TABLE IF NOT EXISTS messages (
    id bigserial PRIMARY KEY,
    message_id text UNIQUE,
    room text NOT NULL,
    user_name text,
    username text NOT NULL,
    text text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    epoch text,
    "offset" bigint,
    deleted boolean NOT NULL DEFAULT false,
    UNIQUE (room, epoch, "offset")
);
CREATE INDEX IF NOT EXISTS messages_by_room ON messages (room, id);
"""


def _hash(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)


@dataclass(frozen=True, slots=True)
class User:
    name: str
    moderator: bool


class Store:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, dsn: str) -> Store:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=10)
        async with pool.acquire() as conn:
            await conn.execute(SCHEMA)
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    # Users and sessions

    async def ensure_user(self, name: str, password: str, moderator: bool) -> None:
        salt = secrets.token_bytes(16)
        await self._pool.execute(
            "INSERT INTO users (name, salt, password_hash, moderator) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (name) DO UPDATE SET moderator = EXCLUDED.moderator",
            name,
            salt,
            _hash(password, salt),
            moderator,
        )

    async def check_password(self, name: str, password: str) -> User | None:
        row = await self._pool.fetchrow(
            "SELECT salt, password_hash, moderator FROM users WHERE name = $1", name
        )
        if row is None or not hmac.compare_digest(
            _hash(password, row["salt"]), row["password_hash"]
        ):
            return None
        return User(name, row["moderator"])

    async def new_session(self, user: str, ttl: int) -> str:
        session = secrets.token_urlsafe(32)
        await self._pool.execute(
            "INSERT INTO sessions (id, user_name, expires_at) VALUES ($1, $2, $3)",
            session,
            user,
            datetime.now(UTC) + timedelta(seconds=ttl),
        )
        return session

    async def session_user(self, session: str) -> User | None:
        row = await self._pool.fetchrow(
            "SELECT u.name, u.moderator FROM sessions s JOIN users u ON u.name = s.user_name "
            "WHERE s.id = $1 AND s.expires_at > now()",
            session,
        )
        return None if row is None else User(row["name"], row["moderator"])

    async def end_session(self, session: str) -> None:
        await self._pool.execute("DELETE FROM sessions WHERE id = $1", session)

    # Bans (the join and publish hooks enforce them too, on every node, even for a client that
    # reconnects after being removed)

    async def ban(self, room: str, user: str, seconds: int, reason: str) -> datetime:
        until = datetime.now(UTC) + timedelta(seconds=seconds)
        await self._pool.execute(
            "INSERT INTO bans (room, user_name, until, reason) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (room, user_name) DO UPDATE SET until = $3, reason = $4",
            room,
            user,
            until,
            reason,
        )
        return until

    async def banned_until(self, room: str, user: str) -> datetime | None:
        until: datetime | None = await self._pool.fetchval(
            "SELECT until FROM bans WHERE room = $1 AND user_name = $2 AND until > now()",
            room,
            user,
        )
        return until

    # Messages

    async def accept_message(
        self, message_id: str, room: str, user: str | None, username: str, text: str
    ) -> None:
        """The publish hook's row; a repeated call for the same message changes nothing."""
        await self._pool.execute(
            "INSERT INTO messages (message_id, room, user_name, username, text) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (message_id) DO NOTHING",
            message_id,
            room,
            user,
            username,
            text,
        )

    async def record_published(self, event: dict[str, Any]) -> None:
        """A message event from the room's stream: give its row the offset (or add the row,
        for messages that did not pass the hook: the HTTP API, a fail-open publish)."""
        room, epoch, offset = event["room"], event["epoch"], event["offset"]
        message_id = event.get("message_id")
        if event.get("deleted"):
            await self.mark_deleted_offset(room, epoch, offset)
            return
        if message_id is not None:
            updated = await self._pool.execute(
                'UPDATE messages SET epoch = $2, "offset" = $3 WHERE message_id = $1',
                message_id,
                epoch,
                offset,
            )
            if updated != "UPDATE 0":
                return
        await self._pool.execute(
            'INSERT INTO messages (message_id, room, username, text, epoch, "offset") '
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            message_id,
            room,
            event.get("username", ""),
            event.get("text", ""),
            epoch,
            offset,
        )

    async def last_offset(self, room: str) -> tuple[str, int] | None:
        row = await self._pool.fetchrow(
            'SELECT epoch, "offset" FROM messages WHERE room = $1 AND "offset" IS NOT NULL '
            "ORDER BY id DESC LIMIT 1",
            room,
        )
        return None if row is None else (row["epoch"], row["offset"])

    async def message(self, message_row: int) -> dict[str, Any] | None:
        row = await self._pool.fetchrow(
            'SELECT id, room, user_name, username, epoch, "offset", deleted FROM messages '
            "WHERE id = $1",
            message_row,
        )
        return None if row is None else dict(row)

    async def mark_deleted(self, message_row: int) -> None:
        await self._pool.execute("UPDATE messages SET deleted = true WHERE id = $1", message_row)

    async def mark_deleted_offset(self, room: str, epoch: str, offset: int) -> None:
        await self._pool.execute(
            'UPDATE messages SET deleted = true WHERE room = $1 AND epoch = $2 AND "offset" = $3',
            room,
            epoch,
            offset,
        )

    async def history(self, room: str, before: int | None, limit: int) -> list[dict[str, Any]]:
        """Newest first, from row ``before`` back; a deleted message comes without its text."""
        rows = await self._pool.fetch(
            'SELECT id, message_id, username, text, deleted, epoch, "offset", created_at '
            "FROM messages WHERE room = $1 AND ($2::bigint IS NULL OR id < $2) "
            "ORDER BY id DESC LIMIT $3",
            room,
            before,
            limit,
        )
        return [
            {
                "id": row["id"],
                "message_id": row["message_id"],
                "username": row["username"],
                "text": None if row["deleted"] else row["text"],
                "deleted": row["deleted"],
                "epoch": row["epoch"],
                "offset": row["offset"],
                "created_at": row["created_at"].isoformat(),
            }
            for row in rows
        ]

    async def rooms(self) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            "SELECT room, count(*) AS messages, max(created_at) AS last FROM messages "
            "GROUP BY room ORDER BY max(created_at) DESC LIMIT 200"
        )
        return [
            {"room": r["room"], "messages": r["messages"], "last": r["last"].isoformat()}
            for r in rows
        ]

    async def count(self, room: str) -> int:
        value: int = await self._pool.fetchval(
            "SELECT count(*) FROM messages WHERE room = $1 AND NOT deleted", room
        )
        return value
