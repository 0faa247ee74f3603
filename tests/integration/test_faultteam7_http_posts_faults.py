"""Messages posted over the HTTP API (``POST /api/rooms/{room}/messages``, through nginx) beside
WebSocket senders, across a Sentinel failover and every node's command link killed with replies
in flight: a 201 means every member on every node gets the message once and in order, or a
``loss`` covers it; a 503 means it was never published (nobody gets it); a 504 means either,
and then everybody. Checked with the WebSocket members' record (``tests/support/delivery.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from functools import partial
from typing import cast

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster
from websockets.asyncio.client import ClientConnection

from tests.support.cluster import QUICK_ENV, until
from tests.support.delivery import Fault, Member, Traffic, in_thread
from tests.support.failovers import sentinel_failover
from tests.support.httpclient import request

pytestmark = pytest.mark.integration

ROOMS = ["north", "south"]
INTERVAL = 0.02
LIMITS = {
    "ROOMCAST_API_RATE_PER_SECOND": "5000",
    "ROOMCAST_API_RATE_BURST": "5000",
}


async def post_steadily(url: str, poster: Member, stop: asyncio.Event) -> None:
    """One backend posting at a steady pace, each answer recorded as a sender's would be."""
    serial = itertools.count(1)
    while not stop.is_set():
        request_id = f"{poster.name}-{next(serial)}"
        text = f"text of {request_id}"
        poster.texts[request_id] = text
        try:
            answer = await request(
                "POST",
                f"{url}/api/rooms/{poster.room}/messages",
                json_body={"text": text, "username": poster.name},
                timeout=30,
            )
        except (OSError, TimeoutError):
            poster.unconfirmed.add(request_id)  # no answer: either
        else:
            if answer.status == 201:
                body = json.loads(answer.body)
                poster.acked[request_id] = (body["epoch"], body["offset"])
            elif answer.status == 504:
                poster.unconfirmed.add(request_id)
            else:
                assert answer.status == 503, (answer.status, answer.body)
                poster.refused.add(request_id)
        poster.changed.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), INTERVAL)


async def across(cluster: LocalCluster, fault: Fault, what: str) -> None:
    traffic = await Traffic.start(cluster.url, ROOMS, senders=1)
    # Posters are not connected: they only send, and their Member records their answers.
    posters = [Member(f"{room}-http", room, cast(ClientConnection, None)) for room in ROOMS]
    stop = asyncio.Event()
    loops = [asyncio.create_task(post_steadily(cluster.http_url, p, stop)) for p in posters]
    traffic.senders.extend(posters)
    try:
        await traffic.more_acks(5)
        await fault()
        await traffic.more_acks(10, timeout=40)
        stop.set()
        await asyncio.gather(*loops)
        await traffic.finish(timeout=30)
        posted = sum(len(p.acked) for p in posters)
        print(f"\n{what}: {traffic.summary()}; {posted} of them posted over HTTP")
        traffic.check()
    finally:
        stop.set()
        for loop in loops:
            loop.cancel()
        for poster in posters:
            traffic.senders.remove(poster)
        await traffic.close()


async def test_http_posts_across_a_sentinel_failover() -> None:
    async with sentinel_failover(LIMITS) as (cluster, fail_over):
        await across(cluster, fail_over, "sentinel failover")


async def test_http_posts_while_command_links_are_killed() -> None:
    with LocalCluster(3, node_env=dict(QUICK_ENV, **LIMITS)) as cluster:
        admin = redis.Redis(port=cluster.redis_port)

        def command_links() -> int:
            return len(admin.client_list("normal")) - 1  # not this one

        async def kill_command_links() -> None:
            for _ in range(3):
                assert await in_thread(partial(admin.client_kill_filter, _type="normal")) >= 3
                await until(lambda: command_links() >= 3, 20, "the nodes' command links back")

        try:
            await across(cluster, kill_command_links, "CLIENT KILL TYPE normal x3")
        finally:
            admin.close()
