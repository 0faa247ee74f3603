"""The Python client under the server API (issue 16), against REAL nginx, redis-server and nodes:
it refreshes its token from the application's token URL, stops on 4003, comes back after 4002,
forgets a room it was removed from, and shows deleted messages as deleted."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import orjson
import pytest
from roomcast_dev.devcluster import LocalCluster

from roomcast.client import (
    Banned,
    ChatMessage,
    Closed,
    Connected,
    Disconnect,
    Disconnected,
    Event,
    JoinError,
    MessageDeleted,
    Refreshed,
    Removed,
    RoomcastClient,
    token_from_url,
)
from tests.support.serverapi import API_ENV, admin_of, all_ready, new_name, post, token
from tests.support.wsclient import scaled

pytestmark = pytest.mark.integration

E = TypeVar("E")

CLIENT_ENV = {
    **API_ENV,
    # Short token lifetimes are tested: no leeway, the notice a second ahead.
    "ROOMCAST_AUTH_LEEWAY": "0",
    "ROOMCAST_TOKEN_REFRESH_NOTICE": "1",
}


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(3, node_env=CLIENT_ENV) as running:
        yield all_ready(running)


@contextmanager
def token_server(sub: str, lifetime: int) -> Iterator[tuple[str, list[str]]]:
    """The application's token URL: a fresh token for ``sub`` per GET, as JSON."""
    issued: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.headers.get("Authorization") != "Session s1":
                self.send_response(401)
                self.end_headers()
                return
            issued.append(token(sub, ttl=lifetime))
            body = orjson.dumps({"token": issued[-1]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/token", issued
    finally:
        server.shutdown()
        server.server_close()


async def next_of(client: RoomcastClient, kind: type[E], timeout: float = 10) -> E:
    async with asyncio.timeout(scaled(timeout)):
        async for event in client:
            if isinstance(event, kind):
                return event
    raise AssertionError(f"the client stopped before a {kind.__name__}")


async def events_until(client: RoomcastClient, kind: type[E]) -> AsyncIterator[Event]:
    async with asyncio.timeout(scaled(10)):
        async for event in client:
            yield event
            if isinstance(event, kind):
                return


async def test_the_client_refreshes_its_token_from_the_token_url(cluster: LocalCluster) -> None:
    user = new_name("u")
    room = new_name("room")
    with token_server(user, lifetime=2) as (url, issued):
        source = token_from_url(url, headers={"Authorization": "Session s1"})
        async with RoomcastClient(cluster.url, user, token=source, rooms=[room]) as client:
            connected = await next_of(client, Connected)
            for _ in range(2):
                await next_of(client, Refreshed)
            # Two tokens later the first connection is still the one in use, and it works.
            sent = await (await client.send(room, "still here")).wait()
            assert sent.offset >= 1
            assert client.node == connected.node
        assert len(issued) >= 3


async def test_the_client_obeys_disconnect_remove_ban_and_delete(cluster: LocalCluster) -> None:
    user = new_name("u")
    room, other_room = new_name("room"), new_name("room")
    fixed = token(user, ttl=600)
    async with (
        admin_of(cluster) as admin,
        RoomcastClient(cluster.url, user, token=fixed, rooms=[room, other_room]) as client,
    ):
        await client.join(room)
        await client.join(other_room)
        posted = await post(cluster, room, "soon gone")
        assert (await next_of(client, ChatMessage)).text == "soon gone"
        await admin.delete_message(room, posted["offset"])
        deleted = await next_of(client, MessageDeleted)
        assert (deleted.room, deleted.offset) == (room, posted["offset"])
        (kept,) = (await client.history(room)).messages
        assert kept.deleted and kept.offset == posted["offset"] and kept.text == ""

        # Reconnect allowed: the client comes back and rejoins its rooms.
        await admin.disconnect(user, reason="rebalance", reconnect=True)
        seen = [event async for event in events_until(client, Connected)]
        assert Disconnect("rebalance", True) in seen
        assert any(
            isinstance(e, Disconnected) and e.code == 4002 and e.will_reconnect for e in seen
        )
        await client.join(room)

        await admin.remove(room, user, reason="off topic")
        removed = await next_of(client, Removed)
        assert removed == Removed(room, "off topic")
        with pytest.raises(ValueError, match="join"):
            await client.send(room, "not a member any more")
        await admin.ban(other_room, user, seconds=600, reason="spam")
        assert (await next_of(client, Banned)).room == other_room
        with pytest.raises(JoinError) as refused:
            await client.join(other_room)
        assert refused.value.error.code == "banned"

        # Told not to come back: the client stops.
        await admin.disconnect(user, reason="account closed", reconnect=False)
        closed = await next_of(client, Closed)
        assert closed.code == 4003
