"""A connection ends when its token does: notice before exp, refresh on the same connection,
close 4001 after exp + leeway. Real Node, MemoryBroker and Connections, no sockets."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from prometheus_client import CollectorRegistry

from roomcast.broker import HistoryLimits
from roomcast.broker.memory import MemoryBroker
from roomcast.core.node import Node
from roomcast.net.token_clock import TokenClock
from roomcast.net.transport import WebSocketServer
from roomcast.runtime.metrics import Metrics
from tests.support.wsharness import INSTANCE, WsClient, make_settings, settle

SECRET = "t" * 40


def token(lifetime: int, sub: str = "u-1", **claims: Any) -> str:
    # Whole seconds after the current one: PyJWT compares int(exp) with the clock.
    body = {"sub": sub, "name": "alice", "exp": int(time.time()) + lifetime, **claims}
    return jwt.encode(body, SECRET, "HS256")


@dataclass
class Env:
    server: WebSocketServer
    registry: CollectorRegistry

    async def connect(self, lifetime: int, **claims: Any) -> WsClient:
        client = WsClient(self.server, path="/chat?token=" + token(lifetime, **claims))
        assert client.response.status_code == 101
        await settle()
        wrote = asyncio.Event()
        transport = client.transport
        original = transport.write

        def write(data: bytes) -> None:
            original(data)
            wrote.set()

        transport.write = write  # type: ignore[method-assign]
        client.wrote = wrote  # type: ignore[attr-defined]
        return client


async def next_events(client: WsClient, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Wait for the server's next write (an event, or the close), and return its events."""
    wrote: asyncio.Event = client.wrote  # type: ignore[attr-defined]
    async with asyncio.timeout(timeout):
        while True:
            events = client.events()
            if events or client.close_code is not None:
                return events
            wrote.clear()
            await wrote.wait()


async def start_env(**settings_given: Any) -> Env:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    settings = make_settings(**settings_given)
    node = Node(settings.node_id, 16, settings.max_frame_bytes, metrics)
    broker = MemoryBroker(node.on_broker_message, limits=HistoryLimits(size=10))
    await broker.start()
    server = WebSocketServer(node, settings, metrics, asyncio.get_running_loop(), INSTANCE)
    node.attach(broker, server.outbox)
    return Env(server, registry)


@pytest.fixture
async def env() -> Env:
    return await start_env(auth_secret=SECRET, auth_leeway=0.0, token_refresh_notice=0.3)


async def test_told_before_exp_then_closed_4001_and_out_of_its_rooms(env: Env) -> None:
    client = await env.connect(2)
    assert client.events()[0]["type"] == "welcome"
    client.send_json({"type": "join", "room": "r"})
    await settle()
    assert [e["type"] for e in client.events()] == ["joined"]
    notice = (await next_events(client))[0]
    assert notice["type"] == "token_expiring"
    assert notice["closes_at"] == notice["expires_at"]  # leeway 0 here
    assert await next_events(client) == []
    assert client.close_code == 4001
    assert env.server.connections == set()
    rejected = {"code": "token_expired"}
    assert env.registry.get_sample_value("roomcast_frames_rejected_total", rejected) == 1


async def test_a_refresh_keeps_the_connection_past_the_old_exp(env: Env) -> None:
    client = await env.connect(2)
    client.events()
    first = (await next_events(client))[0]
    assert first["type"] == "token_expiring"
    client.send_json({"type": "refresh", "token": token(3), "id": 7})
    await settle()
    refreshed = client.events()
    assert refreshed[0]["type"] == "refreshed" and refreshed[0]["id"] == 7
    assert refreshed[0]["expires_at"] > first["expires_at"]
    # The new token's notice comes after the old token's exp: still open then.
    second = (await next_events(client))[0]
    assert second["type"] == "token_expiring"
    assert time.time() * 1000 > first["expires_at"]
    assert client.close_code is None
    await next_events(client)
    assert client.close_code == 4001


@pytest.mark.parametrize(
    ("new_token", "code"),
    [
        (lambda: token(60, sub="someone-else"), "forbidden"),
        (lambda: token(60, name="mallory"), "forbidden"),
        (lambda: token(60, rooms=["other-*"]), "forbidden"),
        (lambda: token(-5), "invalid_token"),
        (lambda: jwt.encode({"sub": "u-1", "exp": 2**40}, "x" * 40, "HS256"), "invalid_token"),
        (lambda: 42, "invalid_token"),
    ],
    ids=["other sub", "other name", "rooms narrowed", "expired", "bad signature", "not a string"],
)
async def test_a_bad_refresh_is_refused_and_changes_nothing(
    env: Env, new_token: Any, code: str
) -> None:
    client = await env.connect(30)
    client.send_json({"type": "join", "room": "r"})
    await settle()
    client.events()
    client.send_json({"type": "refresh", "token": new_token()})
    await settle()
    [error] = client.events()
    assert (error["type"], error["code"]) == ("error", code)
    [conn] = env.server.connections
    assert conn.identity is not None and conn.identity.name == "alice"


async def test_a_refresh_on_a_node_without_tokens_is_invalid_token_saying_tokens_off() -> None:
    # The error codes' table (docs/protocol.md): `tokens_off` is no code of its own here but
    # how the reason of the `invalid_token` begins.
    env = await start_env()
    client = WsClient(env.server, path="/chat")
    await settle()
    assert [e["type"] for e in client.events()] == ["welcome"]
    client.send_json({"type": "refresh", "token": token(30), "id": 1})
    await settle()
    [error] = client.events()
    assert (error["type"], error["code"], error["id"]) == ("error", "invalid_token", 1)
    assert error["reason"].startswith("tokens_off: ")


class _Conn:
    def __init__(self, expires: float) -> None:
        self.closed = False
        self.token_expires: float | None = expires
        self.token_version = 0

    def adopt(self, clock: TokenClock[_Conn], expires: float) -> None:
        """As Connection.adopt does for a token with another exp."""
        clock.forget(self)
        self.token_expires = expires
        self.token_version += 1
        clock.track(self)


async def test_the_clock_forgets_closed_connections_instead_of_growing() -> None:
    due: list[str] = []
    clock: TokenClock[_Conn] = TokenClock(
        asyncio.get_running_loop(), lambda c, kind: due.append(kind), 60.0, 30.0
    )
    far = time.time() + 3600
    for _ in range(10_000):
        conn = _Conn(far)
        clock.track(conn)
        conn.closed = True
        clock.forget(conn)
    assert len(clock) <= 2 * 2048
    clock.stop()
    assert due == []


async def test_two_tokens_in_turn_do_not_grow_the_clock() -> None:
    """Entries were told stale by the exp they were made for: refreshing A, B, A, ... made
    every entry of A due again (each would send its own notice) and compaction kept them."""
    due: list[str] = []
    clock: TokenClock[_Conn] = TokenClock(
        asyncio.get_running_loop(), lambda c, kind: due.append(kind), 60.0, 30.0
    )
    first = time.time() + 3600
    conn = _Conn(first)
    clock.track(conn)
    for _ in range(10_000):
        conn.adopt(clock, first + 1)
        conn.adopt(clock, first)
    assert len(clock) <= 2 * 2048
    clock.stop()
    assert due == []
