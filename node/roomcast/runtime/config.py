"""Node settings: one frozen object built from ``ROOMCAST_*`` environment variables.

Every value is validated at start-up; a bad value stops the node with a message that names the
variable, what it holds and what is expected, instead of failing later under load.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Final, Literal, TypeVar

from roomcast.runtime.keys import load_public_key

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LOG_LEVELS: tuple[LogLevel, ...] = ("DEBUG", "INFO", "WARNING", "ERROR")
RedisMode = Literal["standalone", "cluster", "sentinel"]
REDIS_MODES: tuple[RedisMode, ...] = ("standalone", "cluster", "sentinel")
FailMode = Literal["open", "closed"]
FAIL_MODES: tuple[FailMode, ...] = ("open", "closed")

T = TypeVar("T")

# What each received frame costs against the client receive budget on top of its payload: the
# work of a frame (parsing, a handler, maybe a Redis round trip) is not in its bytes.
FRAME_OVERHEAD_BYTES: Final = 1024

# One client's legal burst (ROOMCAST_MESSAGE_RATE_BURST 20 x the 64 KiB frame limit = 1.25 MiB)
# must fit both the receive budget and the room's history, with room to spare: a page's join +
# ``history``, a rejoin with ``since`` and an event-stream resume get the whole burst back.
# Answers larger than the send bound are streamed page by page (never built whole), so history
# may exceed it.
DEFAULT_HISTORY_BYTES: Final = 2 * 1024 * 1024
# The receive budget is never tighter than the client message limits (40 at once, 20/s) at the
# largest frame (64 KiB + FRAME_OVERHEAD_BYTES): a legal message is refused, if at all, by the
# message limiter, whose error names it (its id), not by the byte budget, which refuses a frame
# unparsed and cannot. 40 x 65 KiB = 2.54 MiB, 20 x 65 KiB = 1.27 MiB/s, plus slack for joins,
# pings and typing.
DEFAULT_CLIENT_RECEIVE_BYTES_BURST: Final = 3 * 1024 * 1024
DEFAULT_CLIENT_RECEIVE_BYTES_PER_SECOND: Final = 1536 * 1024


class ConfigError(ValueError):
    """A ``ROOMCAST_*`` variable holds a value the node cannot run with."""


@dataclass(frozen=True, slots=True)
class Settings:
    # Listening
    host: str = "127.0.0.1"
    port: int = 8000
    metrics_host: str | None = None  # None: same as ``host``
    metrics_port: int = 9000
    # Cluster
    redis_url: str | None = None  # None: in-process broker, a single node needing no Redis
    # standalone: one Redis; cluster: ``redis_url`` lists seed nodes (comma-separated);
    # sentinel: the primary is asked of ``redis_sentinels``, ``redis_url`` only adds credentials.
    redis_mode: RedisMode = "standalone"
    redis_sentinels: tuple[str, ...] = ()  # host:port of each sentinel
    redis_sentinel_master: str | None = None  # the name the sentinels monitor
    # The sentinels' own credentials (their requirepass/ACL user), apart from the primary's.
    redis_sentinel_username: str | None = None
    redis_sentinel_password: str | None = field(default=None, repr=False)
    node_id: str = field(default_factory=socket.gethostname)
    # Limits
    max_frame_bytes: int = 64 * 1024
    max_rooms_per_connection: int = 16
    # Rooms with a member on this node (core/rooms.py): each keeps a presence hash in Redis that
    # no maxmemory policy evicts. 50,000 per node keeps 3 nodes' presence well inside the
    # shipped Redis's 192 MB while holding the capacity page's 50,000-room deployment.
    max_rooms_per_node: int = 50_000
    send_buffer_bytes: int = 1024 * 1024
    # ... and over every client of the node: what it holds for clients whose socket is backed
    # up. Each client's bound alone lets N clients that do not read pin N MiB (400 of them, from
    # 100 addresses, would take most of the 512 MiB a pod gets in k8s/21-node.yaml); over this
    # total a backed-up client is over its own bound at once (it falls behind, then is dropped).
    send_buffer_total_bytes: int = 128 * 1024 * 1024
    rate_limit_per_second: float = 50.0
    rate_limit_burst: int = 100
    max_fragments: int = 64  # frames one message may be split into
    # WebSockets open at once on this node; 0: the process's RLIMIT_NOFILE less a reserve
    # (net/fd_limit.py). Over it, handshakes get 503 + Retry-After instead of a dropped socket.
    max_connections: int = 0
    # bytes received per client (token subject, or address in open mode) over all its
    # connections on a node; each frame costs its payload plus FRAME_OVERHEAD_BYTES (the
    # burst used is at least one largest frame). The defaults hold the client message limits
    # at the largest frame (see DEFAULT_CLIENT_RECEIVE_BYTES_BURST).
    client_receive_bytes_per_second: int = DEFAULT_CLIENT_RECEIVE_BYTES_PER_SECOND
    client_receive_bytes_burst: int = DEFAULT_CLIENT_RECEIVE_BYTES_BURST
    handshake_timeout: float = 10.0
    # New WebSocket handshakes per node (net/admission.py): above the rate, after the burst,
    # 503 + Retry-After before the upgrade. Sized from the measured cost of a setup (handshake
    # + join, ~430 us of node CPU in the benchmark): 1,000/s keeps setups under half a core.
    admission_rate_per_second: float = 1000.0
    admission_burst: int = 500
    admission_max_retry_after: float = 30.0  # the longest Retry-After a refusal is given
    # ... and per client address, checked first (429 + Retry-After): one address that floods
    # handshakes would otherwise take the node's whole rate, and every other client would be
    # told to come back in up to max_retry_after. 100/s is a tenth of the node's rate; the
    # burst lets an office behind one NAT come back at once after a node died.
    admission_per_address_rate_per_second: float = 100.0
    admission_per_address_burst: int = 400
    # A member over the send bound gets no room traffic until its socket drains, then what it
    # missed from history; if it does not drain for this long, it does not read: closed 1013.
    lag_timeout: float = 10.0
    # Timeouts
    ping_interval: float = 30.0
    close_timeout: float = 5.0
    drain_timeout: float = 10.0
    redis_timeout: float = 5.0
    # History and presence
    history_size: int = 100
    history_ttl: float = 600.0
    # Bytes of messages kept per room in Redis: at least one client's legal burst. Catch-ups
    # and answers read from it are streamed page by page, so it is not bounded by the send
    # buffer.
    history_bytes: int = DEFAULT_HISTORY_BYTES
    presence_ttl: float = 15.0
    # Security
    auth_secret: str | None = field(default=None, repr=False)  # HS256 tokens
    auth_public_key: str | None = field(default=None, repr=False)  # RS256/ES256 tokens (PEM)
    auth_audience: str | None = None
    auth_issuer: str | None = None
    auth_leeway: float = 30.0  # clock skew allowed on exp/nbf/iat, at the handshake and after
    # Key of the user_id in events about a user (core.user_ids), the same on every node. Unset:
    # derived from auth_secret; with a public key alone, a key of each process (ids then differ
    # from node to node and after a restart; the node warns at start).
    user_id_key: str | None = field(default=None, repr=False)
    allowed_origins: tuple[str, ...] = ()  # empty: any origin (development)
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    message_rate_per_second: float = 10.0
    message_rate_burst: int = 20
    typing_rate_per_second: float = 2.0
    typing_rate_burst: int = 5
    # joins and leaves per connection: join/leave churn floods members with user_joined/left
    join_rate_per_second: float = 1.0
    join_rate_burst: int = 20
    # per client (token subject, or address in open mode) over all its connections on a node
    client_message_rate_per_second: float = 20.0
    client_message_rate_burst: int = 40
    client_join_rate_per_second: float = 5.0
    client_join_rate_burst: int = 40
    # typing events per client over all its connections (each is a frame to every member)
    client_typing_rate_per_second: float = 10.0
    client_typing_rate_burst: int = 20
    # token signature checks after the handshake (refresh, a join's room token) per client
    # over its connections on a node: each is ~15x what handling a frame costs
    client_token_check_rate_per_second: float = 10.0
    client_token_check_rate_burst: int = 64
    # bytes of WebSocket `history` answers per client over all its connections: a small
    # request reads up to a room's whole history from Redis (ROOMCAST_HISTORY_BYTES)
    client_history_bytes_per_second: int = 4 * 1024 * 1024
    client_history_bytes_burst: int = 8 * 1024 * 1024
    # bytes of chat messages a client's connections and HTTP posts write to rooms' histories,
    # over all nodes (each message its text + 1 KiB): what Redis keeps for it within
    # ROOMCAST_HISTORY_TTL is at most the burst + the rate x the ttl (~31 MiB by default). A post
    # needs no join: one client's messages, each to a room of its own, kept ~960 MiB per ttl.
    client_history_write_bytes_per_second: int = 32 * 1024
    client_history_write_bytes_burst: int = 12 * 1024 * 1024
    # messages per room per node, whoever sends them
    room_message_rate_per_second: float = 100.0
    room_message_rate_burst: int = 200
    # typing events per room over all nodes, whoever sends them: each is a frame to every
    # member, like a message, and many clients within their own typing limits drowned a room
    room_typing_rate_per_second: float = 20.0
    room_typing_rate_burst: int = 40
    # Big rooms (docs/protocol.md "Big rooms"): from this many connections over every node, a
    # room's user_joined/user_left become one presence_changed per interval, typing is off and
    # presence is paged. 500: a join storm into a room of N costs N²/2 frames (125,000 at 500,
    # about 2.5 s of node + nginx CPU at the 20 µs per delivery measured here), and nobody reads
    # 500 names joining one by one. 0: off.
    big_room_members: int = 500
    big_room_interval: float = 1.0  # seconds between two presence_changed of a room, at least
    # seconds before a token's exp at which the connection is told to refresh it
    token_refresh_notice: float = 60.0
    # HTTP API and event streams
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # backend services' keys
    api_rate_per_second: float = 20.0  # per API key, token subject or (open mode) address
    api_rate_burst: int = 40
    sse_heartbeat: float = 15.0
    http_idle_timeout: float = 60.0
    # The application's hooks (README "Hooks"); a hook without a URL is off.
    hook_connect_url: str | None = None  # handshakes without a token are authenticated there
    hook_join_url: str | None = None
    hook_publish_url: str | None = None
    hook_join_rooms: tuple[str, ...] = ("*",)  # room-name patterns the join hook is asked for
    hook_publish_rooms: tuple[str, ...] = ("*",)
    hook_join_fail_mode: FailMode = "closed"  # a failed hook: open lets it through, closed not
    hook_publish_fail_mode: FailMode = "closed"
    hook_timeout: float = 2.0  # one call, retries included
    hook_max_concurrency: int = 64  # calls in flight per hook per node; more fail at once
    hook_retries: int = 1  # only where safe: nothing sent yet, or an idempotent hook
    hook_breaker_failures: int = 5  # failures in a row that open the circuit
    hook_breaker_reset: float = 10.0  # seconds open before one trial call
    hook_max_response_bytes: int = 64 * 1024
    hook_secret: str | None = field(default=None, repr=False)  # sent as a Bearer token
    # Process
    gc_threshold: int = 20_000  # young-generation collection threshold (CPython's default: 700)
    # Features
    compression: bool = False
    log_level: LogLevel = "INFO"

    @property
    def auth_enabled(self) -> bool:
        return self.auth_secret is not None or self.auth_public_key is not None

    @property
    def page_bytes(self) -> int:
        """Bytes of history read and written at a time for answers and catch-ups larger than
        that: what a client that does not read may pin beyond its send bound. Small (one
        largest message by default): many clients that ask and never read cost little."""
        return max(self.send_buffer_bytes // 16, self.max_frame_bytes)

    @property
    def uses_redis(self) -> bool:
        return self.redis_url is not None or self.redis_mode == "sentinel"

    @property
    def internal_host(self) -> str:
        return self.metrics_host if self.metrics_host is not None else self.host


def _parse_int(name: str, raw: str, minimum: int, maximum: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a whole number") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name}={raw!r}: expected a number from {minimum} to {maximum}")
    return value


def _parse_float(name: str, raw: str, minimum: float, maximum: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a number (seconds or a rate)") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name}={raw!r}: expected a number from {minimum} to {maximum}")
    return value


def _parse_bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r}: expected true/false (or 1/0, yes/no, on/off)")


def _parse_port(name: str, raw: str) -> int:
    # 0 asks the kernel for a free port; the node logs the one it got.
    return _parse_int(name, raw, 0, 65535)


def _parse_redis_url(name: str, raw: str) -> str | None:
    raw = raw.strip()
    if not raw:
        return None
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{name}: expected a redis://, rediss:// or unix:// URL")
    return raw


def _parse_redis_mode(name: str, raw: str) -> RedisMode:
    lowered = raw.strip().lower()
    for mode in REDIS_MODES:
        if lowered == mode:
            return mode
    raise ConfigError(f"{name}={raw!r}: expected one of {', '.join(REDIS_MODES)}")


def _parse_host_port(name: str, item: str) -> str:
    host, sep, port = item.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"{name}: {item!r} is not host:port")
    return item


def _parse_sentinels(name: str, raw: str) -> tuple[str, ...]:
    return tuple(_parse_host_port(name, item) for item in _parse_list(name, raw))


def _check_redis_topology(settings: Settings) -> list[str]:
    """Problems with the combination of mode, URL and sentinel settings (values not echoed)."""
    mode = settings.redis_mode
    url = settings.redis_url
    problems = []
    sentinel_only = (
        settings.redis_sentinels,
        settings.redis_sentinel_master,
        settings.redis_sentinel_username,
        settings.redis_sentinel_password,
    )
    if mode != "sentinel" and any(sentinel_only):
        problems.append(
            "ROOMCAST_REDIS_SENTINELS, ROOMCAST_REDIS_SENTINEL_MASTER and the sentinel "
            "credentials need ROOMCAST_REDIS_MODE=sentinel"
        )
    if settings.redis_sentinel_username and not settings.redis_sentinel_password:
        problems.append("ROOMCAST_REDIS_SENTINEL_USERNAME needs ROOMCAST_REDIS_SENTINEL_PASSWORD")
    if mode == "standalone" and url is not None and "," in url:
        problems.append(
            "ROOMCAST_REDIS_URL: several URLs are seeds of a Redis Cluster: "
            "set ROOMCAST_REDIS_MODE=cluster"
        )
    if mode == "cluster":
        if url is None:
            problems.append("ROOMCAST_REDIS_MODE=cluster needs ROOMCAST_REDIS_URL (seed nodes)")
        else:
            problems += _check_cluster_seeds(url)
    if mode == "sentinel":
        if not settings.redis_sentinels:
            problems.append(
                "ROOMCAST_REDIS_MODE=sentinel needs ROOMCAST_REDIS_SENTINELS (host:port,…)"
            )
        if not settings.redis_sentinel_master:
            problems.append("ROOMCAST_REDIS_MODE=sentinel needs ROOMCAST_REDIS_SENTINEL_MASTER")
        if url is not None and ("," in url or url.startswith("unix://")):
            problems.append(
                "ROOMCAST_REDIS_URL: in sentinel mode, one redis:// or rediss:// URL "
                "(its password, database and TLS apply to the primary)"
            )
    return problems


def _check_cluster_seeds(url: str) -> list[str]:
    from urllib.parse import urlsplit

    items = [item.strip() for item in url.split(",") if item.strip()]
    if items[0].startswith("unix://"):
        return ["ROOMCAST_REDIS_URL: Redis Cluster seeds are redis:// or rediss:// URLs"]
    for item in items:
        if "://" not in item:
            try:
                _parse_host_port("ROOMCAST_REDIS_URL", item)
            except ConfigError:
                return ["ROOMCAST_REDIS_URL: each seed after the first is a URL or host:port"]
            continue
        try:
            parts = urlsplit(item)
            parts.port  # noqa: B018 -- raises on a bad port
        except ValueError:
            return ["ROOMCAST_REDIS_URL: a seed URL has an invalid port"]
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            return ["ROOMCAST_REDIS_URL: Redis Cluster seeds are redis:// or rediss:// URLs"]
        if parts.path.strip("/") not in ("", "0"):
            return ["ROOMCAST_REDIS_URL: Redis Cluster has only database 0"]
    return []


def _parse_node_id(name: str, raw: str) -> str:
    if not 1 <= len(raw) <= 64 or not all(c.isalnum() or c in "-_.:" for c in raw):
        raise ConfigError(f"{name}={raw!r}: expected 1-64 letters, digits or -_.:")
    return raw


def _parse_log_level(name: str, raw: str) -> LogLevel:
    upper = raw.strip().upper()
    for level in LOG_LEVELS:
        if upper == level:
            return level
    raise ConfigError(f"{name}={raw!r}: expected one of {', '.join(LOG_LEVELS)}")


def _parse_secret(name: str, raw: str) -> str | None:
    value = raw.strip()
    if not value:
        return None
    if name.endswith(("AUTH_SECRET", "HOOK_SECRET", "USER_ID_KEY")) and len(value) < 32:
        raise ConfigError(f"{name}: use at least 32 characters (e.g. `openssl rand -hex 32`)")
    return value


def _parse_optional(name: str, raw: str) -> str | None:
    return raw.strip() or None


def _parse_list(name: str, raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _parse_proxies(name: str, raw: str) -> tuple[str, ...]:
    import ipaddress

    items = _parse_list(name, raw)
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError(f"{name}: {item!r} is not an IP address or network") from None
    return items


def _parse_api_keys(name: str, raw: str) -> tuple[str, ...]:
    keys = _parse_list(name, raw)
    if any(len(key) < 24 for key in keys):
        raise ConfigError(f"{name}: each key needs at least 24 characters (openssl rand -hex 16)")
    return keys


def _parse_hook_url(name: str, raw: str) -> str | None:
    from urllib.parse import urlsplit

    raw = raw.strip()
    if not raw:
        return None
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 -- raises on a bad port
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: not a URL (bad port?)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name}={raw!r}: expected an http:// or https:// URL with a host")
    if parts.username is not None or parts.fragment:
        raise ConfigError(f"{name}: no user:password@ or #fragment (use ROOMCAST_HOOK_SECRET)")
    return raw


def _parse_patterns(name: str, raw: str) -> tuple[str, ...]:
    items = _parse_list(name, raw)
    if not items:
        raise ConfigError(f"{name}: expected room-name patterns, e.g. * or support:*,dm:*")
    for item in items:
        if len(item) > 128 or not all(c.isalnum() or c in "_.:@-*?[]!" for c in item):
            raise ConfigError(f"{name}: {item!r} is not a room-name pattern (fnmatch)")
    return items


def _parse_fail_mode(name: str, raw: str) -> FailMode:
    lowered = raw.strip().lower()
    for mode in FAIL_MODES:
        if lowered == mode:
            return mode
    raise ConfigError(f"{name}={raw!r}: expected open or closed")


def _parse_host(name: str, raw: str) -> str:
    if not raw.strip():
        raise ConfigError(f"{name}: expected an address to listen on, e.g. 0.0.0.0")
    return raw.strip()


_PARSERS: dict[str, Callable[[str, str], object]] = {
    "host": _parse_host,
    "port": _parse_port,
    "metrics_host": _parse_host,
    "metrics_port": _parse_port,
    "redis_url": _parse_redis_url,
    "redis_mode": _parse_redis_mode,
    "redis_sentinels": _parse_sentinels,
    "redis_sentinel_master": _parse_optional,
    "redis_sentinel_username": _parse_optional,
    "redis_sentinel_password": _parse_secret,
    "node_id": _parse_node_id,
    "max_frame_bytes": lambda n, r: _parse_int(n, r, 256, 16 * 1024 * 1024),
    "max_rooms_per_connection": lambda n, r: _parse_int(n, r, 1, 10_000),
    "max_rooms_per_node": lambda n, r: _parse_int(n, r, 1, 100_000_000),
    "send_buffer_bytes": lambda n, r: _parse_int(n, r, 4096, 1024 * 1024 * 1024),
    "send_buffer_total_bytes": lambda n, r: _parse_int(n, r, 1024 * 1024, 1024**4),
    "rate_limit_per_second": lambda n, r: _parse_float(n, r, 0.1, 1_000_000),
    "rate_limit_burst": lambda n, r: _parse_int(n, r, 1, 1_000_000),
    "max_fragments": lambda n, r: _parse_int(n, r, 1, 4096),
    "max_connections": lambda n, r: _parse_int(n, r, 0, 100_000_000),
    "client_receive_bytes_per_second": lambda n, r: _parse_int(n, r, 1024, 2**40),
    "client_receive_bytes_burst": lambda n, r: _parse_int(n, r, 4096, 2**40),
    "handshake_timeout": lambda n, r: _parse_float(n, r, 0.1, 3600),
    "admission_rate_per_second": lambda n, r: _parse_float(n, r, 0.1, 1_000_000_000),
    "admission_burst": lambda n, r: _parse_int(n, r, 1, 1_000_000_000),
    "admission_max_retry_after": lambda n, r: _parse_float(n, r, 1, 3600),
    "admission_per_address_rate_per_second": lambda n, r: _parse_float(n, r, 0.1, 1_000_000_000),
    "admission_per_address_burst": lambda n, r: _parse_int(n, r, 1, 1_000_000_000),
    "lag_timeout": lambda n, r: _parse_float(n, r, 0.1, 3600),
    "ping_interval": lambda n, r: _parse_float(n, r, 0.05, 3600),
    "close_timeout": lambda n, r: _parse_float(n, r, 0.01, 600),
    "drain_timeout": lambda n, r: _parse_float(n, r, 0.0, 3600),
    "redis_timeout": lambda n, r: _parse_float(n, r, 0.05, 600),
    "history_size": lambda n, r: _parse_int(n, r, 1, 100_000),
    "history_ttl": lambda n, r: _parse_float(n, r, 1, 30 * 86400),
    "history_bytes": lambda n, r: _parse_int(n, r, 1024, 512 * 1024 * 1024),
    "presence_ttl": lambda n, r: _parse_float(n, r, 0.3, 3600),
    "auth_secret": _parse_secret,
    "user_id_key": _parse_secret,
    "auth_public_key": _parse_secret,
    "auth_audience": _parse_optional,
    "auth_issuer": _parse_optional,
    "auth_leeway": lambda n, r: _parse_float(n, r, 0, 300),
    "allowed_origins": _parse_list,
    "trusted_proxies": _parse_proxies,
    "message_rate_per_second": lambda n, r: _parse_float(n, r, 0.01, 1_000_000),
    "message_rate_burst": lambda n, r: _parse_int(n, r, 1, 1_000_000),
    "typing_rate_per_second": lambda n, r: _parse_float(n, r, 0.01, 1_000_000),
    "typing_rate_burst": lambda n, r: _parse_int(n, r, 1, 1_000_000),
    "big_room_members": lambda n, r: _parse_int(n, r, 0, 100_000_000),
    "big_room_interval": lambda n, r: _parse_float(n, r, 0.05, 60),
    "join_rate_per_second": lambda n, r: _parse_float(n, r, 0.01, 1_000_000),
    "join_rate_burst": lambda n, r: _parse_int(n, r, 1, 1_000_000),
    "client_message_rate_per_second": lambda n, r: _parse_float(n, r, 0.01, 1_000_000),
    "client_message_rate_burst": lambda n, r: _parse_int(n, r, 1, 1_000_000),
    "client_typing_rate_per_second": lambda n, r: _parse_float(n, r, 0.01, 1_000_000),
    "client_typing_rate_burst": lambda n, r: _parse_int(n, r, 1, 1_000_000),
    "client_token_check_rate_per_second": lambda n, r: _parse_float(n, r, 0.01, 1_000_000),
    "client_token_check_rate_burst": lambda n, r: _parse_int(n, r, 1, 1_000_000),
    "client_history_bytes_per_second": lambda n, r: _parse_int(n, r, 1024, 1 << 40),
    "client_history_bytes_burst": lambda n, r: _parse_int(n, r, 1024, 1 << 40),
    "client_history_write_bytes_per_second": lambda n, r: _parse_int(n, r, 1024, 1 << 40),
    "client_history_write_bytes_burst": lambda n, r: _parse_int(n, r, 1024, 1 << 40),
    "client_join_rate_per_second": lambda n, r: _parse_float(n, r, 0.01, 1_000_000),
    "client_join_rate_burst": lambda n, r: _parse_int(n, r, 1, 1_000_000),
    "room_message_rate_per_second": lambda n, r: _parse_float(n, r, 0.01, 1_000_000),
    "room_message_rate_burst": lambda n, r: _parse_int(n, r, 1, 1_000_000),
    "room_typing_rate_per_second": lambda n, r: _parse_float(n, r, 0.01, 1_000_000),
    "room_typing_rate_burst": lambda n, r: _parse_int(n, r, 1, 1_000_000),
    "token_refresh_notice": lambda n, r: _parse_float(n, r, 1, 86400),
    "api_keys": _parse_api_keys,
    "api_rate_per_second": lambda n, r: _parse_float(n, r, 0.01, 1_000_000),
    "api_rate_burst": lambda n, r: _parse_int(n, r, 1, 1_000_000),
    "sse_heartbeat": lambda n, r: _parse_float(n, r, 0.05, 3600),
    "http_idle_timeout": lambda n, r: _parse_float(n, r, 0.1, 3600),
    "hook_connect_url": _parse_hook_url,
    "hook_join_url": _parse_hook_url,
    "hook_publish_url": _parse_hook_url,
    "hook_join_rooms": _parse_patterns,
    "hook_publish_rooms": _parse_patterns,
    "hook_join_fail_mode": _parse_fail_mode,
    "hook_publish_fail_mode": _parse_fail_mode,
    "hook_timeout": lambda n, r: _parse_float(n, r, 0.01, 60),
    "hook_max_concurrency": lambda n, r: _parse_int(n, r, 1, 100_000),
    "hook_retries": lambda n, r: _parse_int(n, r, 0, 5),
    "hook_breaker_failures": lambda n, r: _parse_int(n, r, 1, 100_000),
    "hook_breaker_reset": lambda n, r: _parse_float(n, r, 0.05, 3600),
    "hook_max_response_bytes": lambda n, r: _parse_int(n, r, 1024, 16 * 1024 * 1024),
    "hook_secret": _parse_secret,
    "gc_threshold": lambda n, r: _parse_int(n, r, 100, 10_000_000),
    "compression": _parse_bool,
    "log_level": _parse_log_level,
}

ENV_PREFIX = "ROOMCAST_"
# Secrets may come from files instead (Docker/Kubernetes secrets): ROOMCAST_<NAME>_FILE.
FILE_VARIABLES = (
    "auth_secret",
    "user_id_key",
    "auth_public_key",
    "redis_url",
    "api_keys",
    "redis_sentinel_password",
    "hook_secret",
)


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def env_names() -> tuple[str, ...]:
    """Every environment variable the node reads (used by the deployment contract tests)."""
    names = [env_name(f.name) for f in fields(Settings)]
    return tuple(names + [env_name(name) + "_FILE" for name in FILE_VARIABLES])


def _read_secret_file(name: str, path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as exc:
        # The path is not a secret; its content is, and is never shown.
        raise ConfigError(f"{name}={path!r}: cannot read it ({exc.strerror})") from None


def _weak_secrets(settings: Settings) -> list[str]:
    """One line per secret that is a shipped placeholder or guessable (values never echoed)."""
    from roomcast.runtime.weak_secrets import GENERATE_HINT, redis_password_in, why_weak

    # (variable, value, whether only a generator should have made it)
    candidates: list[tuple[str, str | None, bool]] = [
        ("ROOMCAST_AUTH_SECRET", settings.auth_secret, True),
        ("ROOMCAST_USER_ID_KEY", settings.user_id_key, True),
        *(
            (f"ROOMCAST_API_KEYS (key {i + 1})", key, True)
            for i, key in enumerate(settings.api_keys)
        ),
        ("ROOMCAST_REDIS_SENTINEL_PASSWORD", settings.redis_sentinel_password, False),
        (
            "ROOMCAST_REDIS_URL (its password)",
            None if settings.redis_url is None else redis_password_in(settings.redis_url),
            False,
        ),
    ]
    problems = []
    for name, value, random_expected in candidates:
        reason = None if not value else why_weak(value, random_expected=random_expected)
        if reason is not None:
            problems.append(f"{name}: {reason}; {GENERATE_HINT}")
    return problems


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from the environment; raise ConfigError naming every bad variable."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    problems: list[str] = []
    for f in fields(Settings):
        name = env_name(f.name)
        raw = env.get(name)
        file_path = env.get(name + "_FILE") if f.name in FILE_VARIABLES else None
        if file_path is not None:
            if raw is not None:
                problems.append(f"{name} and {name}_FILE are both set: choose one")
                continue
            try:
                raw = _read_secret_file(name + "_FILE", file_path)
            except ConfigError as exc:
                problems.append(str(exc))
                continue
        if raw is None:
            continue
        try:
            values[f.name] = _PARSERS[f.name](name, raw)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    settings = Settings(**values)  # type: ignore[arg-type]
    topology_problems = _check_redis_topology(settings)
    if topology_problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(topology_problems))
    weak = _weak_secrets(settings)
    if weak:
        raise ConfigError("refusing to start with guessable secrets:\n  " + "\n  ".join(weak))
    if settings.auth_secret is not None and settings.auth_public_key is not None:
        raise ConfigError("set ROOMCAST_AUTH_SECRET (HS256) or ROOMCAST_AUTH_PUBLIC_KEY, not both")

    if settings.auth_public_key is not None:
        try:
            load_public_key(settings.auth_public_key)
        except (ValueError, TypeError) as exc:
            message = str(exc) if "RSA" in str(exc) else "not a PEM public key"
            raise ConfigError(f"ROOMCAST_AUTH_PUBLIC_KEY: {message}") from None
    return settings
