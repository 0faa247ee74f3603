"""Red team 2: an event stream opened just before a ban outlives it.

docs/http-api.md: "Event streams (SSE) opened with a user token obey the orders about their
user: ... a removal or ban the user's stream of that room, each after the order's event", and
"every node checks [bans] inside the join script, so a join racing the ban is refused by Redis
itself". A stream is not a join: its node reads the ban key (a GET) when the request comes,
and only once that answer is back does it register the stream where orders look for it. A ban
whose order the node handles between the two (Redis ran the GET first, then the ban; the
order comes on the subscriber link, the GET's answer on the command link) finds no stream to
end, and the stream then opens and carries the room to the banned user for as long as it
stays up.

Made deterministic with a TCP relay between one node and Redis that holds back the answer to
the ban GET until that node counted the ban order (roomcast_api_orders_total{kind="ban"}).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.adversarial.devcluster_shim import LocalCluster, scaled
from tests.adversarial.httpraw import http
from tests.adversarial.readiness import until_ready
from tests.adversarial.redis_relay import RedisRelay
from tests.support.httpclient import EventStream
from tests.support.serverapi import API_ENV, API_KEY, new_name, token


@pytest.fixture
def cluster() -> Iterator[Any]:
    with LocalCluster(1, nginx=False, node_env=API_ENV) as running:
        yield running


async def ban_orders(node: Any) -> float:
    text = (await http(node.metrics_port, "GET", "/metrics", timeout=5)).body.decode()
    for line in text.splitlines():
        if line.startswith("roomcast_api_orders_total") and 'kind="ban"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_stream_opened_as_the_ban_lands_is_ended_too(cluster: Any) -> None:
    other = cluster.nodes[0]
    relay = RedisRelay(cluster.redis_port)
    relay_port = await relay.start()
    try:
        streamed = await asyncio.to_thread(
            cluster.start_node, {"ROOMCAST_REDIS_URL": f"redis://127.0.0.1:{relay_port}"}
        )
        await until_ready(other)
        await until_ready(streamed)
        room, user = new_name("room"), new_name("u")
        relay.hold_ban_reads = True
        opening = asyncio.ensure_future(
            EventStream.open(
                f"http://127.0.0.1:{streamed.port}/api/rooms/{room}/events",
                headers={"Authorization": f"Bearer {token(user)}"},
            )
        )
        await asyncio.wait_for(relay.asked.wait(), scaled(10))
        # Redis answered "not banned"; the answer is on its way. Now the ban, through the
        # other node: its order reaches the stream's node before that answer.
        banned = await http(
            other.port, "PUT", f"/api/rooms/{room}/bans/{user}",
            headers=[("Authorization", f"Bearer {API_KEY}")],
            json_body={"seconds": 600, "reason": "spam"},
        )  # fmt: skip
        assert banned.status == 200, banned
        deadline = time.monotonic() + scaled(10)
        while await ban_orders(streamed) < 1:
            assert time.monotonic() < deadline, "the stream's node never got the ban order"
            await asyncio.sleep(0.02)
        relay.release.set()
        stream = await asyncio.wait_for(opening, scaled(10))
        try:
            events: list[str] = []
            if stream.status == 200:
                # The room goes on: what does the banned user's stream carry?
                posted = await http(
                    other.port, "POST", f"/api/rooms/{room}/messages",
                    headers=[("Authorization", f"Bearer {token(new_name('u'))}")],
                    json_body={"text": "after the ban"},
                )  # fmt: skip
                assert posted.status == 201, posted
                with contextlib.suppress(EOFError, TimeoutError):
                    while True:
                        event = await stream.next(timeout=3)
                        events.append(str(event.data.get("type")))
                        if event.data.get("text") == "after the ban":
                            break
            figures = (
                f"ban ordered while the stream's ban check was on its way back: the stream "
                f"answered {stream.status}, then carried {events}, ended: {stream.ended}"
            )
            print(figures)
            assert stream.status == 403 or (stream.ended and "message" not in events), figures
        finally:
            stream.close()
    finally:
        await relay.close()
