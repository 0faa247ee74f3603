"""A node holds at most ROOMCAST_MAX_ROOMS_PER_NODE rooms with members: each keeps a presence hash
in Redis that no maxmemory policy evicts, and many addresses, each within its own limits (16 rooms
per connection, its join rates), could otherwise join new rooms until Redis refused every write
(red team 5: 50 addresses joined 3,200 new rooms in 3 s, none refused).

Real redis-server and a real node; each attacking connection names its own address the way nginx
names a real client's (the node believes the proxy hop from loopback)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster

from tests.support.wsclient import Client

pytestmark = pytest.mark.integration

CAP = 24
ADDRESSES = 4  # x 15 new rooms per connection (and the lobby): 60 tried, within every limit


async def _join_or_refusal(client: Client, room: str, username: str, request: str) -> Any:
    await client.send(type="join", room=room, username=username, id=request)
    return await client.recv_where(
        lambda e: (
            (e["type"] == "joined" and e.get("room") == room)
            or (e["type"] == "error" and e.get("id") == request)
        )
    )


async def _spam(client: Client, tag: str, username: str) -> list[Any]:
    """Fifteen new rooms sent at once, then their answers."""
    rooms = [f"spam-{tag}-{username}-{r}" for r in range(15)]
    for index, room in enumerate(rooms):
        await client.send(type="join", room=room, username=username, id=f"j{index}")
    answers = []
    for index, room in enumerate(rooms):
        request = f"j{index}"
        answers.append(
            await client.recv_where(
                lambda e, room=room, request=request: (
                    (  # type: ignore[misc]
                        e["type"] == "joined" and e.get("room") == room
                    )
                    or (e["type"] == "error" and e.get("id") == request)
                )
            )
        )
    return answers


async def test_many_addresses_cannot_fill_redis_with_rooms() -> None:
    with LocalCluster(1, nginx=False, node_env={"ROOMCAST_MAX_ROOMS_PER_NODE": str(CAP)}) as c:
        node = c.nodes[0]
        assert c.redis_url is not None
        store = redis.Redis.from_url(c.redis_url)
        # A room with a member before the attack: it must stay joinable at the cap.
        owner = await Client.connect(node.url)
        await owner.join("lobby", "owner")

        attackers = [
            await Client.connect(
                node.url, additional_headers={"X-Forwarded-For": f"198.51.100.{i}"}
            )
            for i in range(1, ADDRESSES + 1)
        ]
        for index, ws in enumerate(attackers):  # also in the lobby: their leaves show there
            await ws.join("lobby", f"a{index}")
        tag = uuid.uuid4().hex[:6]
        answers = [
            answer
            for each in await asyncio.gather(
                *(_spam(ws, tag, f"a{index}") for index, ws in enumerate(attackers))
            )
            for answer in each
        ]
        joined = sum(1 for e in answers if e["type"] == "joined")
        refused = [e for e in answers if e["type"] == "error"]
        assert joined == CAP - 1, f"{joined} new rooms joined with a cap of {CAP} (lobby is one)"
        assert {e["code"] for e in refused} == {"too_many_rooms"}, refused[:3]
        assert "this node holds its most rooms" in refused[0]["reason"]
        presence = len(store.keys("rc:{*}:presence"))
        assert presence <= CAP, f"{presence} presence hashes in Redis with a cap of {CAP}"

        # At the cap, a room that has members still takes more, and its messages flow.
        guest = await Client.connect(node.url)
        await guest.join("lobby", "guest")
        await guest.send(type="message", room="lobby", text="still here", id="m1")
        seen = await owner.recv_type("message", room="lobby")
        assert seen["text"] == "still here"

        # Rooms whose members left free their places for new rooms.
        for ws in attackers:
            await ws.close()
        for index in range(ADDRESSES):  # the node has handled each close (it left everywhere)
            await owner.recv_type("user_left", room="lobby", username=f"a{index}")
        late = await Client.connect(
            node.url, additional_headers={"X-Forwarded-For": "198.51.100.200"}
        )
        answer = await _join_or_refusal(late, f"fresh-{tag}", "late", "fresh")
        assert answer["type"] == "joined", answer
        for client in (owner, guest, late):
            await client.close()
        store.close()
