"""The server API's checks (issue 16), written once and run against standalone Redis and Redis
Cluster: each order goes through nginx, and its effect is awaited on all three nodes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from roomcast_dev.devcluster import LocalCluster, NodeProcess

from roomcast.admin import RoomcastAdmin
from roomcast.core.auth import issue_token
from tests.support.cluster import FAST_ENV, ready
from tests.support.httpclient import EventStream, request
from tests.support.wsclient import Client, scaled

SECRET = "s3cret-for-the-server-api-tests-0123456789"
API_KEY = "server-api-key-0123456789abcdef"
API_ENV = {
    **FAST_ENV,
    "ROOMCAST_AUTH_SECRET": SECRET,
    "ROOMCAST_API_KEYS": API_KEY,
    "ROOMCAST_API_RATE_PER_SECOND": "5000",
    "ROOMCAST_API_RATE_BURST": "5000",
    "ROOMCAST_SSE_HEARTBEAT": "0.3",
    "ROOMCAST_PRESENCE_TTL": "3",  # a heartbeat (and fresh node figures) every second
}


def all_ready(cluster: LocalCluster) -> LocalCluster:
    """Wait until every node says it is ready: its control subscription is confirmed then, so
    no order can miss it (LocalCluster waits only for the nodes to listen)."""
    deadline = time.monotonic() + scaled(20)
    pending = list(cluster.nodes)
    while pending:
        pending = [node for node in pending if not ready(node)]
        assert time.monotonic() < deadline, f"not ready: {[n.node_id for n in pending]}"
        if pending:
            time.sleep(0.05)
    return cluster


def new_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def admin_of(cluster: LocalCluster) -> RoomcastAdmin:
    return RoomcastAdmin(cluster.http_url, API_KEY, timeout=scaled(10))


def token(sub: str, rooms: list[str] | None = None, **claims: Any) -> str:
    return issue_token(SECRET, sub, name=sub, rooms=rooms if rooms is not None else ["*"], **claims)


async def connect(node: NodeProcess, sub: str, rooms: list[str] | None = None) -> Client:
    """A user's connection straight to one node (not through nginx: the node is chosen)."""
    return await Client.connect(f"{node.url}?token={token(sub, rooms)}")


@asynccontextmanager
async def on_every_node(
    cluster: LocalCluster, sub: str, room: str | None = None
) -> AsyncIterator[list[Client]]:
    """One connection of ``sub`` on each node (joined to ``room`` when given)."""
    clients = [await connect(node, sub) for node in cluster.nodes]
    try:
        assert len({c.node for c in clients}) == len(cluster.nodes)
        if room is not None:
            for client in clients:
                await join(client, room)
        yield clients
    finally:
        for client in clients:
            await client.close()


async def join(client: Client, room: str, **extra: Any) -> dict[str, Any]:
    """Join and return the answer: ``joined``, or the ``error`` for this room."""
    await client.send(type="join", room=room, **extra)
    while True:
        event = await client.recv()
        if event.get("room") == room and event["type"] in ("joined", "error"):
            return event


async def post(cluster: LocalCluster, room: str, text: str) -> dict[str, Any]:
    answer = await request(
        "POST",
        f"{cluster.http_url}/api/rooms/{room}/messages",
        json_body={"text": text, "username": "backend"},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert answer.status == 201, answer.body
    posted: dict[str, Any] = answer.json()
    return posted


async def history(cluster: LocalCluster, room: str) -> dict[str, Any]:
    answer = await request(
        "GET",
        f"{cluster.http_url}/api/rooms/{room}/history",
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert answer.status == 200, answer.body
    found: dict[str, Any] = answer.json()
    return found


# The checks


async def check_disconnect(cluster: LocalCluster) -> None:
    user, bystander = new_name("u"), new_name("u")
    room = new_name("room")
    async with on_every_node(cluster, user, room) as theirs:
        other = await connect(cluster.nodes[0], bystander)
        try:
            await join(other, room)
            async with admin_of(cluster) as admin:
                told = await admin.disconnect(user, reason="maintenance", reconnect=True)
            assert told.nodes_told == len(cluster.nodes), told
            for client in theirs:
                event = await client.recv_type("disconnect")
                assert event == {"type": "disconnect", "reason": "maintenance", "reconnect": True}
                assert await client.expect_close() == (4002, "maintenance")
            # Everyone else stays, and hears each departure.
            for _ in theirs:
                await other.recv_type("user_left", room=room, username=user)
            await other.send(type="message", room=room, text="still here", id="m1")
            await other.recv_type("ack", id="m1")
        finally:
            await other.close()
    async with on_every_node(cluster, user) as theirs:
        async with admin_of(cluster) as admin:
            await admin.disconnect(user, reason="go away", reconnect=False)
        for client in theirs:
            assert (await client.recv_type("disconnect"))["reconnect"] is False
            assert await client.expect_close() == (4003, "go away")


async def check_remove(cluster: LocalCluster) -> None:
    user, watcher = new_name("u"), new_name("w")
    room = new_name("room")
    async with on_every_node(cluster, user, room) as theirs:
        other = await connect(cluster.nodes[1], watcher)
        try:
            await join(other, room)
            async with admin_of(cluster) as admin:
                removed = await admin.remove(room, user, reason="off topic")
            assert removed.nodes_told == len(cluster.nodes)
            for client in theirs:
                event = await client.recv_type("removed")
                assert event == {"type": "removed", "room": room, "reason": "off topic"}
            for _ in theirs:
                await other.recv_type("user_left", room=room, username=user)
            for client in theirs:
                # Out of the room, still connected: a message there is refused.
                await client.send(type="message", room=room, text="hello?", id="x")
                assert (await client.recv_type("error", id="x"))["code"] == "not_joined"
            presence = await request(
                "GET",
                f"{cluster.http_url}/api/rooms/{room}/presence",
                headers={"X-API-Key": API_KEY},
            )
            assert [m["username"] for m in presence.json()["members"]] == [watcher]
            # Removed is not banned: joining again works.
            assert (await join(theirs[0], room))["type"] == "joined"
        finally:
            await other.close()


async def check_ban(cluster: LocalCluster) -> None:
    user = new_name("u")
    room = new_name("room")
    seconds = max(2, round(scaled(2)))
    async with on_every_node(cluster, user, room) as theirs:
        async with admin_of(cluster) as admin:
            ban = await admin.ban(room, user, seconds=seconds, reason="spam")
            assert ban.until_ms > time.time() * 1000
            listed = await admin.bans(room)
            assert [(b.user, b.until_ms, b.reason) for b in listed] == [
                (user, ban.until_ms, "spam")
            ]
        for client in theirs:
            event = await client.recv_type("banned")
            assert event == {
                "type": "banned",
                "room": room,
                "reason": "spam",
                "until": ban.until_ms,
            }
        for client in theirs:  # refused on every node, by Redis
            refused = await join(client, room)
            assert refused["type"] == "error" and refused["code"] == "banned", refused
        # The ban expires by itself (a TTL in Redis): then joins work again.
        await asyncio.sleep(max(0.0, ban.until_ms / 1000 - time.time()) + 0.2)
        for client in theirs:
            assert (await join(client, room))["type"] == "joined"
        async with admin_of(cluster) as admin:
            assert await admin.bans(room) == []
            # A lifted ban: joins work again at once.
            await admin.ban(room, user, seconds=600, reason="again")
            for client in theirs:
                await client.recv_type("banned")
            assert (await join(theirs[0], room))["code"] == "banned"
            await admin.unban(room, user)
            assert await admin.bans(room) == []
        for client in theirs:
            assert (await join(client, room))["type"] == "joined"


async def check_delete(cluster: LocalCluster) -> None:
    user = new_name("u")
    room = new_name("room")
    async with on_every_node(cluster, user, room) as theirs:
        first = await post(cluster, room, "one")
        epoch = first["epoch"]
        second = await post(cluster, room, "two: the bad one")
        await post(cluster, room, "three")
        for client in theirs:
            await client.recv_type("message", text="three")
        async with admin_of(cluster) as admin:
            deleted = await admin.delete_message(room, second["offset"])
            assert (deleted.room, deleted.epoch, deleted.offset) == (room, epoch, second["offset"])
        for client in theirs:
            event = await client.recv_type("message_deleted")
            assert event == {
                "type": "message_deleted",
                "room": room,
                "epoch": epoch,
                "offset": second["offset"],
            }
        tombstone = {
            "type": "message",
            "room": room,
            "offset": second["offset"],
            "epoch": epoch,
            "deleted": True,
        }
        kept = (await history(cluster, room))["messages"]
        assert [m.get("text") for m in kept] == ["one", None, "three"]
        assert kept[1] == tombstone
        # `since` recovery, on every node.
        for node in cluster.nodes:
            late = await connect(node, new_name("late"))
            try:
                since = {"epoch": epoch, "offset": first["offset"]}
                assert (await join(late, room, since=since))["recovered"] is True
                assert await late.recv_type("message") == tombstone
                assert (await late.recv_type("message"))["text"] == "three"
            finally:
                await late.close()
        # SSE resume.
        stream = await EventStream.open(
            f"{cluster.http_url}/api/rooms/{room}/events?since={first['offset']}&token={API_KEY}"
        )
        try:
            assert stream.status == 200
            assert (await stream.next()).data["type"] == "joined"
            resumed = await stream.next()
            assert (resumed.data, resumed.id) == (tombstone, second["offset"])
            assert (await stream.next()).data["text"] == "three"
        finally:
            stream.close()
        async with admin_of(cluster) as admin:
            again = await admin.delete_message(room, second["offset"])  # idempotent
            assert again.offset == second["offset"]
            for offset in (0, 999):
                answer = await request(
                    "DELETE",
                    f"{cluster.http_url}/api/rooms/{room}/messages/{offset}",
                    headers={"X-API-Key": API_KEY},
                )
                assert answer.status == 404, answer.body
                assert answer.json()["code"] in ("not_in_history", "not_found")


async def check_clear(cluster: LocalCluster) -> None:
    room = new_name("room")
    async with on_every_node(cluster, new_name("u"), room) as theirs:
        await post(cluster, room, "a")
        last = await post(cluster, room, "b")
        async with admin_of(cluster) as admin:
            cleared = await admin.clear_history(room)
        assert (cleared.epoch, cleared.up_to_offset) == (last["epoch"], last["offset"])
        for client in theirs:
            event = await client.recv_type("history_cleared")
            assert event == {
                "type": "history_cleared",
                "room": room,
                "epoch": last["epoch"],
                "up_to_offset": last["offset"],
            }
        assert (await history(cluster, room))["messages"] == []
        # Offsets go on: nothing published later can be taken for a cleared message.
        after = await post(cluster, room, "c")
        assert (after["epoch"], after["offset"]) == (last["epoch"], last["offset"] + 1)
        late = await connect(cluster.nodes[2], new_name("late"))
        try:
            since = {"epoch": last["epoch"], "offset": 0}
            answer = await join(late, room, since=since)
            assert (answer["recovered"], answer["reason"]) == (False, "too_old")
        finally:
            await late.close()


async def check_broadcast(cluster: LocalCluster) -> None:
    rooms = [new_name("bc") for _ in cluster.nodes]
    members = [await connect(node, new_name("u")) for node in cluster.nodes]
    try:
        for member, room in zip(members, rooms, strict=True):
            await join(member, room)
        async with admin_of(cluster) as admin:
            results = await admin.broadcast(rooms, "to everyone", "announcer")
        assert [r.room for r in results] == rooms
        assert all(r.ok and r.offset == 1 for r in results), results
        for member, room, result in zip(members, rooms, results, strict=True):
            got = await member.recv_type("message", room=room)
            assert (got["text"], got["username"], got["offset"], got["epoch"]) == (
                "to everyone",
                "announcer",
                result.offset,
                result.epoch,
            )
    finally:
        for member in members:
            await member.close()


async def check_rooms_and_cluster(cluster: LocalCluster) -> None:
    prefix = new_name("list")
    rooms = sorted(f"{prefix}-{i}" for i in range(5))
    clients: list[Client] = []
    try:
        for index, room in enumerate(rooms):
            for node in cluster.nodes[: 1 + index % 3]:
                client = await connect(node, f"{prefix}-user{index}")
                clients.append(client)
                await join(client, room)
        async with admin_of(cluster) as admin:
            seen: dict[str, tuple[int, int]] = {}
            pages = 0
            cursor = None
            while True:
                page = await admin.rooms(limit=2, cursor=cursor)
                pages += 1
                assert len(page.rooms) <= 2
                for info in page.rooms:
                    assert info.room not in seen, "a room listed twice"
                    seen[info.room] = (info.members, info.connections)
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
            assert pages >= 3
            for index, room in enumerate(rooms):
                # One user, with one connection per node it joined from.
                assert seen[room] == (1, 1 + index % 3), (room, seen.get(room))
            # Each node's figures are as of its last heartbeat (presence TTL / 3, 1 s here).
            deadline = time.monotonic() + scaled(10)
            while True:
                nodes = await admin.cluster()
                # Every node's snapshot must be one taken after the joins (a sum of connections
                # alone can be met by another node's snapshot of an earlier test's clients).
                if sum(n.connections for n in nodes) >= len(clients) and all(
                    n.rooms >= 1 for n in nodes
                ):
                    break
                assert time.monotonic() < deadline, nodes
                await asyncio.sleep(0.1)
            assert sorted(n.node for n in nodes) == sorted(n.node_id for n in cluster.nodes)
            assert all(n.ready and n.version and n.uptime_s >= 0 for n in nodes)
            assert all(n.rooms >= 1 for n in nodes)
            # Emptied rooms leave the listing.
            for client in clients:
                await client.close()
            clients = []
            deadline = time.monotonic() + scaled(10)
            while True:
                names = {info.room async for info in admin.all_rooms(page_size=50)}
                if not names & set(rooms):
                    break
                assert time.monotonic() < deadline, names & set(rooms)
                await asyncio.sleep(0.05)
    finally:
        for client in clients:
            await client.close()
