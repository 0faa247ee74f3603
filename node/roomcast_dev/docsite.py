"""MkDocs hooks for docs/: the tables that must not drift are generated from the code.

A page says where a table goes with a marker line (``<!-- generated: NAME -->``); the hook
replaces it when the site is built (``make docs``, ``mkdocs build --strict``):

- ``error-codes``, ``close-codes``, ``recovery-statuses``, ``loss-reasons``: every member of
  :mod:`roomcast.wire.codes`, each with its meaning below; a member without one (or a meaning
  for a member that no longer exists) fails the build.
- ``settings``: every field of :class:`roomcast.runtime.config.Settings` as its ``ROOMCAST_*``
  variable, its default and its meaning (same rule), ``_FILE`` variants included.
- ``openapi``: the live OpenAPI document (:func:`roomcast.wire.openapi.document`) rendered as
  one section per operation, and served whole as ``openapi.json``.

``on_files`` also publishes the benchmark's plots (``bench/results/*.png``) under ``bench/``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from enum import Enum
from pathlib import Path
from typing import Any, Final

from roomcast.runtime.config import FILE_VARIABLES, Settings, env_name
from roomcast.wire.codes import (
    FATAL_CLOSE_CODES,
    CloseCode,
    ErrorCode,
    LossReason,
    RecoveryStatus,
)
from roomcast.wire.openapi import document

ROOT: Final = Path(__file__).resolve().parents[2]
MARKER: Final = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.M)


class DocsError(Exception):
    """A generated table is missing a meaning, or keeps one for something that is gone."""


ERROR_MEANINGS: Final[dict[str, str]] = {
    "INVALID_UTF8": "a text frame that is not UTF-8 (closed with 1007)",
    "INVALID_JSON": "the frame (or HTTP body) is not JSON",
    "INVALID_FRAME": "not a JSON object, or `type` missing or not a string",
    "UNKNOWN_TYPE": "a `type` the server does not know",
    "INVALID_ROOM": "not 1-64 of `A-Z a-z 0-9 _ . : @ -` (a broadcast's `rooms`: not a list of "
    "1-100 such names)",
    "INVALID_USERNAME": "not 1-32 letters, digits, spaces or `. @ - _ '`, or blank",
    "INVALID_TEXT": "`text` is not a string",
    "INVALID_SINCE": '`since` is not `{"offset": N, "epoch": E}`',
    "INVALID_LIMIT": "`limit` is not a whole number 1-10000 (history), 1-1000 (a presence page, "
    "the rooms listing)",
    "NOT_JOINED": "the frame names (or implies) a room this connection has not joined",
    "TOO_MANY_ROOMS": "one join more than `ROOMCAST_MAX_ROOMS_PER_CONNECTION`, or a join or "
    "event stream (HTTP 503) of a room the node does not hold at `ROOMCAST_MAX_ROOMS_PER_NODE`",
    "FORBIDDEN": "the token's `rooms` claim does not allow this room",
    "RATE_LIMITED": "over a rate limit: the frame was dropped (HTTP: 429 with `Retry-After`, also "
    "from nginx for an address over its API request rate or open connections)",
    "UNAVAILABLE": "Redis is down: the message was **not** sent, and never will be (HTTP: 503, "
    "also from nginx for a request no node took)",
    "UNCONFIRMED": (
        "a `message` whose fate its node could not learn (its Redis reply was lost and history"
        " could not tell, or the node, draining, stopped waiting for it: answered before the"
        " 1001): it **may or may not** have been sent; if it was, every member gets it."
        " Resending may duplicate it. HTTP: 504, from the node for a post, and from nginx for"
        " any request but a `GET` or `HEAD` that a node took and never answered (it may have"
        " been done)"
    ),
    "INVALID_TOKEN": "a `refresh` whose token is not a string or is refused (the reason says why)",
    "BANNED": "a `join` of a room the application banned this user from (the reason says until "
    "when); over the HTTP API (403), any request about that room made with the banned user's "
    "token (post, history, presence, events), or an open node's post in the banned name",
    "INVALID_ROOM_TOKEN": "a `join`'s `room_token` that is not a token, or is refused (expired, "
    "bad signature; the reason says why)",
    "BINARY_FRAME": "a binary frame: the connection is closed with 1003",
    "FRAME_TOO_BIG": "a frame over `ROOMCAST_MAX_FRAME_BYTES`: closed with 1009 (HTTP: 413, also "
    "from nginx for an API body over its `client_max_body_size`)",
    "FLOOD": "kept sending while rate-limited: closed with 1008",
    "SLOW_CONSUMER": "did not read fast enough: closed with 1013",
    "PROTOCOL_VIOLATION": "a WebSocket protocol error: closed with 1002",
    "TOO_MANY_FRAGMENTS": "a message split into more than `ROOMCAST_MAX_FRAGMENTS` frames: 1009",
    "ORIGIN": "handshake from a browser origin not in `ROOMCAST_ALLOWED_ORIGINS` (403)",
    "TOKEN_MISSING": "tokens are required and none was given (401)",
    "TOKEN_EXPIRED": "the token's `exp` has passed (401)",
    "TOKEN_NOT_YET_VALID": "the token's `nbf`/`iat` is in the future (401)",
    "TOKEN_AUDIENCE": "the token's `aud` is not `ROOMCAST_AUTH_AUDIENCE` (401)",
    "TOKEN_ISSUER": "the token's `iss` is not `ROOMCAST_AUTH_ISSUER` (401)",
    "TOKEN_SIGNATURE": "the token's signature does not verify (401)",
    "TOKEN_INVALID": "not a token roomcast can read (401)",
    "TOKEN_NAME": "the token's `name` claim is not a valid username (403)",
    "API_KEY_INVALID": "an HTTP API key that is not in `ROOMCAST_API_KEYS`, on a node without "
    "tokens (401; with tokens on, it is read as a token: `token_invalid`)",
    "TOKENS_OFF": "never a `code` of its own: how the reason of an `invalid_token` (a `refresh`) "
    "or `invalid_room_token` (a join's `room_token`) begins on a node that verifies no tokens",
    "DUPLICATE_HEADER": "a handshake with two `Host`, `Origin`, `Authorization`... headers (400)",
    "MALFORMED_HEADER": "a handshake header that is not what it must be, e.g. a bad `Origin` (400)",
    "MALFORMED_QUERY": "a handshake with more than 16 query fields (400)",
    "DUPLICATE_TOKEN": "a handshake offering more than one token (query and/or subprotocols) (400)",
    "MALFORMED_REQUEST": "a request websockets cannot parse (a body, a bad header line) (400)",
    "INVALID_REQUEST": "an HTTP request the API cannot read (400, 414)",
    "NOT_FOUND": "no such HTTP endpoint (404)",
    "METHOD_NOT_ALLOWED": "an HTTP endpoint asked with a method it does not answer (405, with "
    "`Allow`)",
    "NOT_IN_HISTORY": "a deleted offset the room's history does not hold (404)",
    "INVALID_CURSOR": "a rooms listing's `cursor` that is not a room name from `next_cursor` (400)",
    "INVALID_USER": "a server API path's user: empty, over 128 characters or with control "
    "characters (404)",
    "INVALID_BODY": "a server API body field of the wrong type or range (400)",
    "UNSUPPORTED_MEDIA_TYPE": "an HTTP body that is not `application/json` (415)",
    "INTERNAL_ERROR": "a bug in the node: the HTTP answer is 500",
    "JOIN_DENIED": "the application's join hook refused the join (its reason is shown)",
    "PUBLISH_DENIED": "the application's publish hook refused the message: it got no offset",
    "CONNECT_DENIED": "the application's connect hook refused the handshake (403)",
    "HOOK_UNAVAILABLE": "a fail-closed hook did not answer in time, erred or its circuit is "
    "open (the reason says which); the connect hook answers 503",
}

CLOSE_MEANINGS: Final[dict[str, str]] = {
    "NORMAL": "a normal close",
    "GOING_AWAY": "the node is shutting down (drain): reconnect, nginx sends you to another node",
    "PROTOCOL_ERROR": "a WebSocket protocol violation",
    "UNSUPPORTED_DATA": "a binary frame (only JSON text frames are spoken)",
    "ABNORMAL": "never sent: what a client sees when the connection just died",
    "INVALID_DATA": "a text frame that is not valid UTF-8",
    "POLICY_VIOLATION": "flood: kept sending while rate-limited",
    "MESSAGE_TOO_BIG": "a message over `ROOMCAST_MAX_FRAME_BYTES`, or split into more than "
    "`ROOMCAST_MAX_FRAGMENTS` frames",
    "INTERNAL_ERROR": "a bug in the node",
    "TRY_AGAIN_LATER": "slow consumer: did not read its messages fast enough; resume with `since`",
    "TOKEN_EXPIRED": "the token expired (no `refresh` before `exp` + `ROOMCAST_AUTH_LEEWAY`)",
    "DISCONNECTED": "the application disconnected this user (server API), allowing it back",
    "DISCONNECTED_FOR_GOOD": "the application disconnected this user and said not to come back",
}

RECOVERY_MEANINGS: Final[dict[str, str]] = {
    "RECOVERED": "every missed message follows, then live ones (`recovered: true`)",
    "EPOCH_CHANGED": "the room's history was lost (Redis restarted empty): reload",
    "TOO_OLD": "more was missed than history keeps (size or age): reload with `history`",
    "OVERLOADED": "the room outran the catch-up buffer: reload with `history`",
    "NOT_REQUESTED": "a join without `since`: live from the join on",
}

LOSS_MEANINGS: Final[dict[str, str]] = {
    "EPOCH_CHANGED": (
        "Redis lost the room's history (restarted empty, or a Sentinel failover); the room goes"
        " on in `new_epoch` from offset 1. Everything after `from_offset - 1` of `epoch` up to"
        " there is lost, including any epoch the room went through in between"
    ),
    "TOO_OLD": "the missed offsets are no longer in the room's history",
    "UNAVAILABLE": "Redis could not be read back in time to fill the gap",
}

SETTING_MEANINGS: Final[dict[str, str]] = {
    "host": "address of the public port (use `0.0.0.0` in containers)",
    "port": "public port: WebSocket endpoint `/chat`, HTTP API `/api/` (0: any free port, logged)",
    "metrics_host": "address of the internal port (unset: same as `ROOMCAST_HOST`)",
    "metrics_port": "internal port: `/healthz`, `/readyz`, `/metrics`",
    "redis_url": "`redis://`, `rediss://` or `unix://` (cluster: comma-separated seeds); "
    "unset: in-process broker, one node, no Redis",
    "redis_mode": "`standalone`, `cluster` or `sentinel` (see Operations, Redis topologies)",
    "redis_sentinels": "`host:port` of each sentinel, comma-separated (sentinel mode)",
    "redis_sentinel_master": "the name the sentinels monitor (sentinel mode)",
    "redis_sentinel_username": "the sentinels' own ACL user, apart from the primary's",
    "redis_sentinel_password": "the sentinels' own `requirepass`, apart from the primary's",
    "node_id": "shown in `welcome`, logs and connection ids (default: the host name)",
    "max_frame_bytes": "larger client frames are closed with 1009; larger API bodies get 413",
    "max_rooms_per_connection": "joins beyond it get `too_many_rooms`",
    "max_rooms_per_node": "rooms with a member or an event stream; beyond it, a join of a room "
    "the node does not hold gets `too_many_rooms` (an event stream: 503 `too_many_rooms`)",
    "send_buffer_bytes": "bytes that may wait in the node for one client (WebSocket, event "
    "stream or HTTP answer) once the kernel took what it could; a member over it lags",
    "send_buffer_total_bytes": "bytes the node holds over all its clients whose socket is "
    "backed up; over it a backed-up client lags at once (no slack past its own bound) and a "
    "client that is not backed up may take one page per write",
    "lag_timeout": "seconds a lagging member may take to drain before it is closed 1013",
    "history_bytes": "bytes of messages kept per room (at least one client's legal burst); "
    "answers and catch-ups read from it are streamed page by page, so it may exceed the send "
    "buffer",
    "rate_limit_per_second": "token bucket per connection for frames of every type: rate",
    "rate_limit_burst": "the same bucket's burst",
    "handshake_timeout": "seconds to complete the HTTP upgrade",
    "admission_rate_per_second": "new WebSocket handshakes per node per second; above it "
    "(after the burst) 503 with `Retry-After`",
    "admission_burst": "new WebSocket handshakes per node: burst",
    "admission_max_retry_after": "the longest `Retry-After` a refused handshake is given (s)",
    "admission_per_address_rate_per_second": "new WebSocket handshakes per client address per "
    "node per second, checked before the node's own rate; above it (after the burst) `429` "
    "with `Retry-After`",
    "admission_per_address_burst": "new WebSocket handshakes per client address per node: burst",
    "ping_interval": "seconds; a connection silent for a whole interval after a ping is closed",
    "max_connections": (
        "WebSockets open at once on this node; over it a handshake gets 503 with Retry-After;"
        " 0: the open-files limit (RLIMIT_NOFILE) less a reserve (see operations)"
    ),
    "close_timeout": "seconds for a client to finish a close before the socket is cut",
    "drain_timeout": "seconds from SIGTERM to exit",
    "redis_timeout": "connect/confirm/reply timeout towards Redis, seconds",
    "history_size": "messages kept per room for recovery and `history` (N)",
    "history_ttl": "seconds a room's history outlives its last message (T)",
    "presence_ttl": "seconds without heartbeat after which a node's members leave presence",
    "auth_secret": "token signing secret (HS256, 32+ characters); unset, with no public key: "
    "open mode",
    "auth_public_key": "token public key (PEM; RS256 or ES256)",
    "auth_audience": "required `aud` claim",
    "auth_issuer": "required `iss` claim",
    "allowed_origins": "comma list of browser origins, `https://*.example.com` patterns; "
    "unset: any",
    "trusted_proxies": "addresses/networks whose `X-Forwarded-For` is believed",
    "message_rate_per_second": "chat messages per connection: rate",
    "message_rate_burst": "chat messages per connection: burst",
    "typing_rate_per_second": "typing events per connection: rate",
    "typing_rate_burst": "typing events per connection: burst",
    "max_fragments": "frames one message may be split into (then 1009)",
    "client_receive_bytes_per_second": "bytes per client (token `sub`, or address) over its "
    "connections, per node, each frame counting its payload + 1024: rate",
    "client_receive_bytes_burst": "the same, burst; the defaults hold the client message "
    "limits at the largest frame, so a legal message burst is never refused unparsed",
    "user_id_key": "key of the `user_id` in events about a user (HMAC-SHA256 of the token's "
    "`sub`, 32+ characters), the same on every node; unset: derived from the HS256 secret; with "
    "a public key alone, a random key per process (ids differ between nodes and restarts; "
    "warned at start)",
    "auth_leeway": "seconds of clock skew on `exp`/`nbf`/`iat`; also how long after `exp` an "
    "unrefreshed connection is closed (4001)",
    "big_room_members": "connections over every node from which a room is big: "
    "`user_joined`/`user_left` coalesced into `presence_changed`, `typing` off, `presence` paged "
    "(0: off)",
    "big_room_interval": "seconds between two `presence_changed` notices of a big room, at least",
    "join_rate_per_second": "joins per connection: rate",
    "join_rate_burst": "joins per connection: burst",
    "client_message_rate_per_second": "messages per client (token `sub`, or address) over its "
    "connections, over all nodes: rate",
    "client_message_rate_burst": "the same, burst",
    "client_typing_rate_per_second": "typing events per client (token `sub`, or address) over "
    "its connections, over all nodes: rate",
    "client_typing_rate_burst": "the same, burst",
    "client_token_check_rate_per_second": "token signature checks after the handshake "
    "(`refresh`, a join's `room_token`) per client over its connections, per node: rate",
    "client_token_check_rate_burst": "the same, burst",
    "client_history_bytes_per_second": "bytes of WebSocket `history` answers per client over "
    "its connections, over all nodes (each answer costs its messages' bytes + 1 KiB): rate",
    "client_history_bytes_burst": "the same, burst (at least one answer of "
    "`ROOMCAST_HISTORY_BYTES` should fit)",
    "client_history_write_bytes_per_second": "bytes of chat messages per client (token `sub`, "
    "or address) written to rooms' histories by its connections and HTTP posts, over all nodes "
    "(each message costs its text + 1 KiB, and one that makes its room 300 bytes x a day / "
    "`ROOMCAST_HISTORY_TTL` more, for the offsets the room keeps that long): rate",
    "client_history_write_bytes_burst": "the same, burst (at least one message of "
    "`ROOMCAST_MAX_FRAME_BYTES` + 1 KiB, or such messages are always refused); Redis keeps at "
    "most the burst + the rate x `ROOMCAST_HISTORY_TTL` of one client's messages",
    "client_join_rate_per_second": "join/leave churn per client over all nodes (each leave "
    "spends a token, a join needs one): rate",
    "client_join_rate_burst": "join/leave churn per client over all nodes: burst",
    "room_message_rate_per_second": "messages per room over all nodes: rate",
    "room_message_rate_burst": "messages per room over all nodes: burst",
    "room_typing_rate_per_second": "typing events per room over all nodes, whoever sends "
    "them (each is a frame to every member): rate",
    "room_typing_rate_burst": "typing events per room over all nodes: burst",
    "token_refresh_notice": "seconds before `exp` that `token_expiring` is sent",
    "api_keys": "keys of backend services for the HTTP API (comma list, 24+ characters each)",
    "api_rate_per_second": "HTTP API requests per API key, token subject or (open mode) "
    "address: rate",
    "api_rate_burst": "the same, burst",
    "sse_heartbeat": "seconds between comment lines on quiet event streams",
    "http_idle_timeout": "seconds an idle keep-alive API connection stays open",
    "gc_threshold": "young-generation threshold of Python's garbage collector (CPython's default "
    "is 700: ~7 % of a node's CPU in a connect storm)",
    "compression": "permessage-deflate; off: it costs CPU and ~50 KiB per connection",
    "hook_connect_url": "the connect hook: handshakes without a token are authenticated there "
    "(README, Hooks); unset: off",
    "hook_join_url": "the join hook: allow or deny a join, initial data for the joiner; unset: off",
    "hook_publish_url": "the publish hook: allow, deny or rewrite a message before its offset; "
    "unset: off",
    "hook_join_rooms": "room-name patterns (fnmatch, comma list) the join hook is asked for",
    "hook_publish_rooms": "room-name patterns the publish hook is asked for",
    "hook_join_fail_mode": "`closed`: a failed join hook refuses with `hook_unavailable`; "
    "`open`: the join goes through (without initial data)",
    "hook_publish_fail_mode": "`closed`: a failed publish hook refuses the message; `open`: it is "
    "published unchanged",
    "hook_timeout": "seconds for one hook call, retries included",
    "hook_max_concurrency": "hook calls in flight per hook per node; more fail at once (`busy`)",
    "hook_retries": "retries of a failed call, only where safe: nothing sent yet, or an idempotent "
    "hook (connect, join)",
    "hook_breaker_failures": "failed calls in a row that open a hook's circuit (then calls fail "
    "at once)",
    "hook_breaker_reset": "seconds a circuit stays open before one trial call",
    "hook_max_response_bytes": "the largest hook answer read (a larger one is an error)",
    "hook_secret": "sent to the hooks as `Authorization: Bearer <secret>` (32+ characters)",
    "log_level": "`DEBUG`, `INFO`, `WARNING`, `ERROR`; logs are JSON lines, never message texts",
}


def _checked(what: str, names: list[str], meanings: dict[str, str]) -> None:
    missing = [n for n in names if n not in meanings]
    stale = [n for n in meanings if n not in names]
    if missing or stale:
        raise DocsError(
            f"{what}: no meaning in roomcast_dev/docsite.py for {missing}; "
            f"meanings for what no longer exists: {stale}"
        )


def _enum_table(enum: type[Enum], meanings: dict[str, str], value_title: str) -> str:
    _checked(enum.__name__, [m.name for m in enum], meanings)
    rows = [f"| {value_title} | meaning |", "|---|---|"]
    rows += [f"| `{m.value}` | {meanings[m.name]} |" for m in enum]
    return "\n".join(rows)


def close_codes_table() -> str:
    _checked("CloseCode", [m.name for m in CloseCode], CLOSE_MEANINGS)
    rows = ["| code | meaning | the clients |", "|---|---|---|"]
    for member in CloseCode:
        fatal = member in FATAL_CLOSE_CODES
        action = "stop (a fault of ours: retrying repeats it)" if fatal else "reconnect, resume"
        if member is CloseCode.NORMAL:
            action = "reconnect unless they closed"
        if member is CloseCode.TOKEN_EXPIRED:
            action = "reconnect with a fresh token (from a token callback); with a fixed one, stop"
        if member is CloseCode.DISCONNECTED_FOR_GOOD:
            action = "stop (the application's order, not a fault)"
        rows.append(f"| {member.value} | {CLOSE_MEANINGS[member.name]} | {action} |")
    return "\n".join(rows)


def _default(field: dataclasses.Field[Any]) -> str:
    if field.name == "node_id":
        return "host name"
    if field.default is dataclasses.MISSING:
        return "—"
    value = field.default
    if value is None or value == ():
        return "unset"
    if isinstance(value, tuple):
        value = ",".join(value)
    if isinstance(value, bool):
        value = str(value).lower()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def settings_table() -> str:
    fields = dataclasses.fields(Settings)
    _checked("Settings", [f.name for f in fields], SETTING_MEANINGS)
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for field in fields:
        name = f"`{env_name(field.name)}`"
        if field.name in FILE_VARIABLES:
            name += f" (or `{env_name(field.name)}_FILE`)"
        rows.append(f"| {name} | {_default(field)} | {SETTING_MEANINGS[field.name]} |")
    return "\n".join(rows)


def _schema_text(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return f"[`{name}`](#schema-{name.lower()})"
    return f"`{json.dumps(schema, ensure_ascii=False)}`"


def openapi_markdown() -> str:
    spec = document()
    out = [
        f"OpenAPI {spec['openapi']}, *{spec['info']['title']}* {spec['info']['version']}: "
        "the whole document is [openapi.json](openapi.json) (a node serves the same at "
        "`/api/openapi.json`).",
    ]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            out.append(f"\n### `{method.upper()} {path}`\n\n{operation.get('summary', '')}\n")
            if operation.get("description"):
                out.append(f"{operation['description']}\n")
            parameters = operation.get("parameters", [])
            if parameters:
                out.append("| parameter | in | required | schema | description |")
                out.append("|---|---|---|---|---|")
                for p in parameters:
                    out.append(
                        f"| `{p['name']}` | {p['in']} | {'yes' if p.get('required') else 'no'} "
                        f"| {_schema_text(p.get('schema', {}))} | {p.get('description', '')} |"
                    )
                out.append("")
            body = operation.get("requestBody")
            if body:
                for media, content in body["content"].items():
                    out.append(f"Body (`{media}`): {_schema_text(content['schema'])}\n")
            out.append("| status | meaning | body |")
            out.append("|---|---|---|")
            for status, response in operation["responses"].items():
                contents = response.get("content", {})
                bodies = ", ".join(
                    f"`{media}` {_schema_text(c['schema'])}" if "schema" in c else f"`{media}`"
                    for media, c in contents.items()
                )
                out.append(f"| {status} | {response['description']} | {bodies or '—'} |")
    out.append("\n### Schemas\n")
    for name, schema in spec["components"]["schemas"].items():
        out.append(f'<a id="schema-{name.lower()}"></a>\n**{name}**\n')
        out.append(f"```json\n{json.dumps(schema, indent=2, ensure_ascii=False)}\n```\n")
    return "\n".join(out)


_LINK: Final = re.compile(r"(!?)\[([^\]]*)\]\(((?:results|baseline)/[^)]+)\)")


def _bench_links(markdown: str) -> str:
    """bench/README.md's relative links: its plots are published beside the page under
    ``bench/``, its links to ../docs/ pages become links to those pages; any other file of the
    repository is named (``bench/…``), not linked."""

    def relink(match: re.Match[str]) -> str:
        image, text, target = match.groups()
        if target.startswith("results/") and target.endswith(".png"):
            return f"{image}[{text}](bench/{target.removeprefix('results/')})"
        name = text if text.startswith("`") else f"{text} (`bench/{target}`)"
        return name.replace(f"`{target}`", f"`bench/{target}`")

    # Links into the site (../docs/page.md#anchor on GitHub) are the page's siblings there.
    return _LINK.sub(relink, markdown).replace("](../docs/", "](")


def bench_readme() -> str:
    text = (ROOT / "bench" / "README.md").read_text(encoding="utf-8")
    return _bench_links(text.split("\n", 1)[1].lstrip("\n"))  # its title is the page's


def bench_results() -> str:
    return _bench_links((ROOT / "bench" / "results" / "latest.md").read_text(encoding="utf-8"))


GENERATORS: Final = {
    "bench-readme": bench_readme,
    "bench-results": bench_results,
    "error-codes": lambda: _enum_table(ErrorCode, ERROR_MEANINGS, "code"),
    "close-codes": close_codes_table,
    "recovery-statuses": lambda: _enum_table(RecoveryStatus, RECOVERY_MEANINGS, "reason"),
    "loss-reasons": lambda: _enum_table(LossReason, LOSS_MEANINGS, "reason"),
    "settings": settings_table,
    "openapi": openapi_markdown,
}


def render(markdown: str) -> str:
    """``markdown`` with every marker replaced by its generated table."""

    def replace(match: re.Match[str]) -> str:
        generator = GENERATORS.get(match.group(1))
        if generator is None:
            raise DocsError(f"unknown generated section {match.group(1)!r}")
        return str(generator())

    return MARKER.sub(replace, markdown)


# MkDocs hooks (mkdocs.yml: hooks). Typed loosely: MkDocs is a docs-only dependency.


def on_page_markdown(markdown: str, **_: Any) -> str:
    return render(markdown)


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    for plot in sorted((ROOT / "bench" / "results").glob("*.png")):
        files.append(File.generated(config, f"bench/{plot.name}", abs_src_path=str(plot)))
    files.append(
        File.generated(config, "openapi.json", content=json.dumps(document(), indent=2) + "\n")
    )
    return files
