"""Big rooms on a REAL cluster (redis-server, nginx, 3 node processes) with a low threshold.

Below it the protocol is the article's, unchanged; above it a join storm of K clients costs each
member a presence_changed per interval instead of K user_joined, typing is off, and presence
pages cover every member exactly once (WebSocket and HTTP API).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from roomcast_dev.devcluster import LocalCluster

from roomcast.client import PresenceChanged, RoomcastClient, UserJoined
from tests.support.cluster import FAST_ENV
from tests.support.httpclient import request
from tests.support.wsclient import Client, clients_on_distinct_nodes, scaled

pytestmark = pytest.mark.integration

THRESHOLD = 20
INTERVAL = 0.5
STORM = 80  # K joiners at once, spread over the 3 nodes by nginx

BIG_ENV = {
    **FAST_ENV,
    "ROOMCAST_BIG_ROOM_MEMBERS": str(THRESHOLD),
    "ROOMCAST_BIG_ROOM_INTERVAL": str(INTERVAL),
    "ROOMCAST_JOIN_RATE_PER_SECOND": "1000",
    "ROOMCAST_JOIN_RATE_BURST": "1000",
    "ROOMCAST_API_RATE_PER_SECOND": "1000",
    "ROOMCAST_API_RATE_BURST": "1000",
}


@pytest.fixture(scope="module")
def big_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(3, node_env=BIG_ENV) as running:
        yield running


def new_room() -> str:
    return "big-" + uuid.uuid4().hex[:12]


async def join_many(url: str, room: str, names: list[str]) -> list[Client]:
    async def one(name: str) -> Client:
        client = await Client.connect(url)
        await client.join(room, name)
        return client

    return list(await asyncio.gather(*(one(name) for name in names)))


async def close_all(clients: list[Client]) -> None:
    await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)


async def test_below_the_threshold_the_protocol_is_unchanged(big_cluster: LocalCluster) -> None:
    room = new_room()
    observers = await clients_on_distinct_nodes(big_cluster.url, 3)
    joiners: list[Client] = []
    try:
        for index, observer in enumerate(observers):
            await observer.join(room, f"observer{index}")
        names = [f"user{i:02d}" for i in range(THRESHOLD - 5)]
        joiners = await join_many(big_cluster.url, room, names)
        for index, observer in enumerate(observers):
            expected = set(names) | {f"observer{later}" for later in range(index + 1, 3)}
            seen: set[str] = set()
            while len(seen) < len(expected):
                event = await observer.recv()
                assert event["type"] == "user_joined", event
                assert set(event) == {"type", "room", "username", "user_id"}
                seen.add(event["username"])
            assert seen == expected
        await joiners[0].send(type="presence", room=room)
        presence = await joiners[0].recv_type("presence")
        assert set(presence) == {"type", "room", "members"}  # the whole list, as ever
        assert len(presence["members"]) == len(names) + 3
        await observers[0].send(type="typing", room=room)
        assert (await observers[1].recv_type("typing"))["username"] == "observer0"
        await joiners[0].close()
        left = await observers[2].recv_type("user_left")
        assert left == {
            "type": "user_left",
            "room": room,
            "username": names[0],
            "user_id": joiners[0].welcome["user_id"],
        }
    finally:
        await close_all(observers + joiners)


async def test_a_join_storm_above_the_threshold_is_coalesced(big_cluster: LocalCluster) -> None:
    room = new_room()
    observers = await clients_on_distinct_nodes(big_cluster.url, 3)
    filling: list[Client] = []
    storm: list[Client] = []
    try:
        for index, observer in enumerate(observers):
            await observer.join(room, f"observer{index}")
        filling = await join_many(big_cluster.url, room, [f"fill{i:02d}" for i in range(THRESHOLD)])
        for index, observer in enumerate(observers):
            # user_joined until the room was big, presence_changed after: every join told once.
            await until_joins_seen(observer, room, (2 - index) + THRESHOLD)
        started = time.monotonic()
        storm = await join_many(big_cluster.url, room, [f"storm{i:03d}" for i in range(STORM)])
        for observer in observers:
            frames = await until_joins_seen(observer, room, STORM)
            elapsed = time.monotonic() - started
            kinds = {frame["type"] for frame in frames}
            assert kinds == {"presence_changed"}, kinds
            # O(1) frames per interval, not one per joiner: notices are an interval apart.
            assert len(frames) <= elapsed / INTERVAL + 1, (len(frames), elapsed)
            assert len(frames) < STORM / 4
            assert all(frame["big"] for frame in frames)
            total = THRESHOLD + 3 + STORM
            assert abs(frames[-1]["connections"] - total) <= total // 10, frames[-1]
        # A joiner of the big room learns the mode and the size from its joined frame.
        newcomer = await Client.connect(big_cluster.url)
        storm.append(newcomer)
        answer = await newcomer.join(room, "newcomer")
        assert answer["big"] is True and answer["connections"] >= THRESHOLD
        # Typing is off: observer0's typing, then its message; nobody gets the typing.
        await observers[0].send(type="typing", room=room)
        await observers[0].send(type="message", room=room, text="after typing")
        for observer in observers[1:]:
            await observer.recv_type("message", text="after typing")
            assert not any(e["type"] == "typing" for e in observer._buffer)
    finally:
        await close_all(observers + filling + storm)


async def until_joins_seen(observer: Client, room: str, joins: int) -> list[dict[str, Any]]:
    """Frames of ``room`` until they told ``joins`` joins (user_joined or presence_changed)."""
    frames: list[dict[str, Any]] = []
    told = 0
    async with asyncio.timeout(scaled(30)):
        while told < joins:
            event = await observer.recv()
            if event.get("room") != room:
                continue
            frames.append(event)
            if event["type"] == "presence_changed":
                told += event["joined"]
            elif event["type"] == "user_joined":
                told += 1
    assert told == joins, (told, joins)
    return frames


async def test_presence_pages_cover_every_member_exactly_once(big_cluster: LocalCluster) -> None:
    room = new_room()
    names = [f"p{i:03d}" for i in range(THRESHOLD * 2)]
    members = await join_many(big_cluster.url, room, names)
    try:
        asker = members[0]
        # Without paging, a big room's answer is the first page with the room's counts.
        await asker.send(type="presence", room=room, id="p0")
        first = await asker.recv_type("presence", id="p0")
        assert first["total_members"] == len(names) == first["total_connections"]
        walked: list[str] = []
        after: str | None = None
        for page_number in range(100):
            frame: dict[str, Any] = {"type": "presence", "room": room, "limit": 7}
            if after is not None:
                frame["after"] = after
            await asker.send(**frame, id=f"page{page_number}")
            page = await asker.recv_type("presence", id=f"page{page_number}")
            assert len(page["members"]) <= 7
            walked += [member["username"] for member in page["members"]]
            after = page["next"]
            if after is None:
                break
        assert walked == sorted(names)  # every member, once, in order
        # A page larger than the bound is refused with an error frame; the connection stays.
        await asker.send(type="presence", room=room, limit=100_000, id="huge")
        error = await asker.recv_type("error", id="huge")
        assert error["code"] == "invalid_limit"
        # The HTTP API pages the same way.
        walked = []
        query = "?limit=9"
        while True:
            url = f"{big_cluster.http_url}/api/rooms/{room}/presence{query}"
            response = await request("GET", url)
            assert response.status == 200, response.body
            body = response.json()
            walked += [member["username"] for member in body["members"]]
            if body["next"] is None:
                break
            query = f"?limit=9&after={quote(body['next'])}"
        assert walked == sorted(names)
        bad = await request("GET", f"{big_cluster.http_url}/api/rooms/{room}/presence?limit=0")
        assert bad.status == 400 and bad.json()["code"] == "invalid_limit"
    finally:
        await close_all(members)


async def test_the_python_client_reads_a_big_room(big_cluster: LocalCluster) -> None:
    room = new_room()
    names = [f"c{i:03d}" for i in range(THRESHOLD + 5)]
    members = await join_many(big_cluster.url, room, names)
    client = RoomcastClient(big_cluster.url, "pyclient")
    try:
        async with client:
            joined = await client.join(room, timeout=scaled(10))
            assert joined.big and joined.connections is not None
            assert joined.connections >= THRESHOLD
            walked = [member.username async for member in client.all_members(room, page=4)]
            assert walked == sorted([*names, "pyclient"])
            first = await client.presence(room, timeout=scaled(10))
            assert first.paged and first.total_members == len(names) + 1
            # A join after a quiet interval is told at once, as a typed event.
            newcomer = await join_many(big_cluster.url, room, ["newcomer"])
            members += newcomer
            async with asyncio.timeout(scaled(10)):
                async for event in client:
                    if isinstance(event, PresenceChanged) and event.joined:
                        assert event.big and event.room == room
                        break
                    assert not isinstance(event, UserJoined), event
    finally:
        await close_all(members)
