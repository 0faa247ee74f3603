"""Red team 14: an event stream dropped while it resumes page by page must let go of its room.

A stream that resumes more than a page of history (``Last-Event-ID`` or ``?since=``) is sent it a
page each time its socket drains. A client that never reads is dropped after
``ROOMCAST_LAG_TIMEOUT``, as a slow WebSocket is. The drop woke the resuming task before the
connection's close reached the node's streams, and that task took the stream out of the resuming
ones itself, uncounted: the close then found it nowhere. Each such stream stayed counted in
``roomcast_event_streams_open`` and kept its room subscribed in Redis for good: 6 rooms resumed
by streams that never read left 6 Redis subscriptions and 6 open streams behind, with no stream
left on the node. With the node's room cap counting streams, each would also have kept a place of
the cap until the node refused every new room.

Real redis-server and a real node; the attacker is one loopback client that never reads.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.adversarial.devcluster_shim import LocalCluster
from tests.adversarial.httpraw import http, request_bytes
from tests.adversarial.rawws import open_socket
from tests.adversarial.readiness import until_ready
from tests.support.cluster import http_get, metric_value, until

ROOMS = 6
MESSAGES = 8  # of ~30 KB each: ~240 KB of history per room, pages of 64 KB
TEXT = "x" * 30_000


@pytest.fixture
def cluster() -> Iterator[Any]:
    env = {"ROOMCAST_LAG_TIMEOUT": "1", "ROOMCAST_API_RATE_BURST": "200"}
    with LocalCluster(1, nginx=False, node_env=env) as running:
        yield running


def _metric(node: Any, name: str) -> float:
    return metric_value(http_get(f"{node.metrics_url}/metrics")[1], name)


async def _fill(port: int, room: str, address: str) -> None:
    for index in range(MESSAGES):
        answer = await http(
            port,
            "POST",
            f"/api/rooms/{room}/messages",
            headers=[("X-Forwarded-For", address)],
            json_body={"text": TEXT, "username": f"poster{index}"},
        )
        assert answer.status == 201, answer


async def _resume_unread(port: int, room: str, address: str) -> asyncio.StreamWriter:
    """Resume the room's stream from its first message and never read (a small receive
    buffer, so the node's side fills). Each from its own address: one client's history budget
    would answer its later resumes `overloaded`, without history to send."""
    _, writer = await open_socket("127.0.0.1", port, rcvbuf=4096)
    target = f"/api/rooms/{room}/events?since=1"
    headers = [("X-Forwarded-For", address)]
    writer.write(request_bytes("GET", target, f"127.0.0.1:{port}", headers, close=False))
    await writer.drain()
    transport = writer.transport
    assert isinstance(transport, asyncio.ReadTransport)
    transport.pause_reading()  # asyncio would read it all into the StreamReader otherwise
    return writer


async def test_resuming_streams_dropped_unread_leave_no_subscription(cluster: Any) -> None:
    node = cluster.nodes[0]
    await until_ready(node)
    assert cluster.redis_url is not None
    store = redis.Redis.from_url(cluster.redis_url)
    tag = uuid.uuid4().hex[:6]
    rooms = [f"resume-{tag}-{index}" for index in range(ROOMS)]
    await asyncio.gather(
        *(_fill(node.port, room, f"198.51.100.{index + 1}") for index, room in enumerate(rooms))
    )
    held = [
        await _resume_unread(node.port, room, f"203.0.113.{index + 1}")
        for index, room in enumerate(rooms)
    ]
    try:
        await until(
            lambda: _metric(node, "roomcast_slow_consumer_drops_total") >= ROOMS,
            10,
            "the node to drop the streams that do not read",
        )
        channels = [f"roomcast:room:{room}" for room in rooms]

        def let_go() -> bool:
            subscribed = sum(count for _, count in store.pubsub_numsub(*channels))
            return subscribed == 0 and _metric(node, "roomcast_event_streams_open") == 0

        try:
            await until(let_go, 3, "the node to let go of the dropped streams' rooms")
        except AssertionError:
            subscribed = sum(count for _, count in store.pubsub_numsub(*channels))
            streams = _metric(node, "roomcast_event_streams_open")
            raise AssertionError(
                f"{ROOMS} resuming streams dropped unread: {subscribed} of their rooms still "
                f"subscribed in Redis, {streams:.0f} streams still counted open"
            ) from None
    finally:
        for writer in held:
            writer.close()
        store.close()
