"""The example backend's settings, from ``CHAT_BACKEND_*`` environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

# name:password pairs created at start (a demo has no sign-up page), and who moderates.
DEFAULT_USERS: tuple[tuple[str, str], ...] = (
    ("alice", "alice-pass"),
    ("bob", "bob-pass"),
    ("moderator", "moderator-pass"),
)
DEFAULT_MODERATORS: tuple[str, ...] = ("moderator",)


class ConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class BackendConfig:
    database_url: str
    # The secret the nodes verify connection and room tokens with (ROOMCAST_AUTH_SECRET).
    token_secret: str = field(repr=False)
    # The key this app calls the nodes' server API with (one of ROOMCAST_API_KEYS).
    api_key: str = field(repr=False)
    # The secret the nodes send to the hooks (ROOMCAST_HOOK_SECRET).
    hook_secret: str = field(repr=False)
    roomcast_http: str  # the nodes' HTTP API, e.g. http://127.0.0.1:8080 (nginx)
    public_ws_url: str  # what browsers connect to, e.g. ws://127.0.0.1:8080/chat
    host: str = "127.0.0.1"
    port: int = 8090
    users: tuple[tuple[str, str], ...] = DEFAULT_USERS
    moderators: tuple[str, ...] = DEFAULT_MODERATORS
    token_ttl: int = 3600
    session_ttl: int = 86400


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is required")
    return value


def load_config(environ: Mapping[str, str] | None = None) -> BackendConfig:
    env = os.environ if environ is None else environ
    users = DEFAULT_USERS
    raw_users = env.get("CHAT_BACKEND_USERS")
    if raw_users:
        pairs = [item.split(":", 1) for item in raw_users.split(",") if item.strip()]
        if any(len(pair) != 2 or not pair[0] or not pair[1] for pair in pairs):
            raise ConfigError("CHAT_BACKEND_USERS: expected name:password,name:password")
        users = tuple((name.strip(), password) for name, password in pairs)
    moderators = DEFAULT_MODERATORS
    if env.get("CHAT_BACKEND_MODERATORS"):
        moderators = tuple(m.strip() for m in env["CHAT_BACKEND_MODERATORS"].split(","))
    try:
        port = int(env.get("CHAT_BACKEND_PORT", "8090"))
    except ValueError:
        raise ConfigError("CHAT_BACKEND_PORT: expected a port number") from None
    return BackendConfig(
        database_url=_required(env, "CHAT_BACKEND_DATABASE_URL"),
        token_secret=_required(env, "CHAT_BACKEND_TOKEN_SECRET"),
        api_key=_required(env, "CHAT_BACKEND_API_KEY"),
        hook_secret=_required(env, "CHAT_BACKEND_HOOK_SECRET"),
        roomcast_http=_required(env, "CHAT_BACKEND_ROOMCAST_HTTP").rstrip("/"),
        public_ws_url=_required(env, "CHAT_BACKEND_PUBLIC_WS_URL"),
        host=env.get("CHAT_BACKEND_HOST", "127.0.0.1"),
        port=port,
        users=users,
        moderators=moderators,
    )
