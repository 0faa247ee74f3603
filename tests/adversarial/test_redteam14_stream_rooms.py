"""Red team 14: event streams must count against the node's room cap.

docs/security.md: a node holds at most ``ROOMCAST_MAX_ROOMS_PER_NODE`` rooms; beyond it "a join of
a room with no member on the node gets ``too_many_rooms``". An event stream
(``GET /api/rooms/{room}/events``) subscribes its node to the room as a join does (a Redis
subscription, the node's room state), but was counted nowhere: one address, through nginx, held
40 streams of 40 new rooms on a node capped at 12 (40 Redis channels subscribed), and filled no
place a WebSocket join would have been refused for. A stream of a room the node does not hold
is now refused 503 ``too_many_rooms`` at the cap (nginx then tries the next node), and the
rooms held by streams alone count against the WebSocket joins' cap too.

Real redis-server, a real node and nginx; the attacker is one loopback client address.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.adversarial.devcluster_shim import LocalCluster
from tests.adversarial.httpraw import EventStreamReader
from tests.adversarial.readiness import until_ready
from tests.support.cluster import until
from tests.support.wsclient import Client

CAP = 12
STREAMS = 40  # within the address's API burst (40) and nginx's 256 connections
BYSTANDER_ADDRESS = "127.0.0.2"


@pytest.fixture
def cluster() -> Iterator[Any]:
    with LocalCluster(1, node_env={"ROOMCAST_MAX_ROOMS_PER_NODE": str(CAP)}) as running:
        yield running


def _room_channels(store: redis.Redis) -> int:
    return len(store.pubsub_channels("roomcast:room:*")) - 1  # the control channel


async def _open(port: int, room: str, source: str | None = None) -> EventStreamReader:
    stream = await EventStreamReader.open(port, f"/api/rooms/{room}/events", source=source)
    if stream.status == 200:
        opened = await stream.next_event()
        assert opened["type"] == "joined", opened
    return stream


async def test_event_streams_count_against_the_node_room_cap(cluster: Any) -> None:
    await until_ready(cluster.nodes[0])
    assert cluster.redis_url is not None
    store = redis.Redis.from_url(cluster.redis_url)
    tag = uuid.uuid4().hex[:6]
    owner = await Client.connect(cluster.url)
    await owner.join("lobby", "owner")  # a room with a member before the attack: one place
    streams: list[EventStreamReader] = []
    try:
        for index in range(STREAMS):
            streams.append(await _open(cluster.nginx_port, f"sse-{tag}-{index}"))
        opened = [s for s in streams if s.status == 200]
        refused = [s for s in streams if s.status != 200]
        channels = _room_channels(store)
        assert len(opened) == CAP - 1, (
            f"{len(opened)} streams of new rooms opened on a node capped at {CAP} rooms "
            f"(the lobby is one); {channels} room channels subscribed in Redis"
        )
        assert channels <= CAP, f"{channels} room channels subscribed with a cap of {CAP}"
        assert {s.status for s in refused} == {503}
        body = await refused[0].reader.readuntil(b"}")  # the JSON error (kept alive)
        assert b'"too_many_rooms"' in body, body

        # The rooms the streams hold are the node's rooms: a WebSocket join of a new room is
        # refused as at any cap; a room the node holds still takes members and streams.
        guest = await Client.connect(cluster.url)
        await guest.send(type="join", room=f"fresh-{tag}", username="guest", id="j1")
        refusal = await guest.recv_type("error")
        assert refusal["code"] == "too_many_rooms", refusal
        await guest.join("lobby", "guest")
        # Another client: the attacker's 40 opens spent its API burst (40), and its 41st and
        # 42nd requests within a refill's time were refused 429 (as in a clean-clone CI run).
        watcher = await _open(cluster.nginx_port, "lobby", source=BYSTANDER_ADDRESS)
        assert watcher.status == 200
        streams.append(watcher)
        held = await _open(cluster.nginx_port, f"sse-{tag}-0", source=BYSTANDER_ADDRESS)
        assert held.status == 200
        streams.append(held)

        # Streams that end free their rooms' places.
        for stream in opened[1:]:
            stream.close()
        # The lobby and sse-0 (still held) stay.
        await until(lambda: _room_channels(store) <= 2, 10, "the closed streams' rooms to go")
        await guest.send(type="join", room=f"fresh-{tag}", username="guest", id="j2")
        joined = await guest.recv_where(
            lambda e: e.get("id") == "j2" or (e["type"] == "joined" and e["room"] == f"fresh-{tag}")
        )
        assert joined["type"] == "joined", joined
        await guest.close()
    finally:
        for stream in streams:
            stream.close()
        await owner.close()
        store.close()
