"""Red team 15: opening and closing event streams over and over, from a few addresses.

docs/security.md bounds join/leave churn per client over all nodes
(`ROOMCAST_CLIENT_JOIN_RATE_*`, 5/s after a burst of 40): a join needs a token of the client's
bucket, a leave spends one. An event stream (`GET /api/rooms/{room}/events`) subscribes its node
to the room as a join does (a Redis SUBSCRIBE, the room's history read, and an UNSUBSCRIBE when
it closes), but spent only the per-node API rate (20/s after 40, per node): through nginx's three
nodes one address opened and closed streams of fresh rooms at three times that, each a
SUBSCRIBE and an UNSUBSCRIBE in Redis, with nothing counted over the cluster.

A stream now needs a token of its client's join bucket to open, and its end spends one, as a
WebSocket leave does: over the limit, 429 `rate_limited` with `Retry-After`, counted in
`roomcast_api_requests_total{endpoint="events",status="429"}`.

Real redis-server, three nodes behind nginx; the attackers are a few loopback addresses.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import redis

from tests.adversarial.devcluster_shim import scaled
from tests.adversarial.httpraw import request_bytes
from tests.adversarial.observe import cpu_seconds
from tests.adversarial.rawws import open_socket, read_head
from tests.support.cluster import http_get, metric_value

ADDRESSES = [f"127.0.0.{n}" for n in range(21, 25)]
LOOPS_PER_ADDRESS = 8
WINDOW_S = 3.0
# The client's join bucket over all nodes: a burst of 40, then 5 a second, for each address;
# the nodes together may overspend by what each admitted during one round trip to Redis (each
# loop's open in flight). Before: 1,000-1,400 streams opened in 3 s by the four addresses
# (the per-node API rate, 20/s after 40, on each of the three nodes, and the machine's CPU).
PER_ADDRESS_BOUND = 40 + 5 * WINDOW_S + 3 * LOOPS_PER_ADDRESS

METRIC = "roomcast_api_requests_total"


def _redis_calls(store: redis.Redis, command: str) -> int:
    stats: dict[str, Any] = store.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def _open_and_close(port: int, source: str, room: str) -> tuple[int, bytes]:
    """One stream: its status, and (refused) its body; an opened one is closed after its first
    event (the room's `stream_opened`)."""
    reader, writer = await open_socket("127.0.0.1", port, source=source)
    try:
        target = f"/api/rooms/{room}/events"
        headers = [("Accept", "text/event-stream")]
        writer.write(request_bytes("GET", target, f"127.0.0.1:{port}", headers, close=False))
        status, head = await read_head(reader)
        if status != 200:
            length = int(head.lower().split("content-length:", 1)[1].split("\r\n", 1)[0])
            return status, await asyncio.wait_for(reader.readexactly(length), scaled(10))
        async with asyncio.timeout(scaled(10)):
            while not (await reader.readline()).startswith(b"data: "):
                pass
        return status, b""
    finally:
        writer.close()


async def test_event_stream_churn_spends_the_clients_join_budget(fresh_cluster: Any) -> None:
    cluster = fresh_cluster
    assert cluster.redis_url is not None
    store = redis.Redis.from_url(cluster.redis_url)
    tag = uuid.uuid4().hex[:6]
    opened = dict.fromkeys(ADDRESSES, 0)
    refusals: list[bytes] = []
    statuses: dict[int, int] = {}
    subscribes = _redis_calls(store, "subscribe")
    unsubscribes = _redis_calls(store, "unsubscribe")
    pids = [node.process.pid for node in cluster.nodes]
    cpu = sum(cpu_seconds(pid) for pid in pids)
    deadline = time.monotonic() + WINDOW_S

    async def churn(source: str, loop: int) -> None:
        attempt = 0
        while time.monotonic() < deadline:
            attempt += 1
            room = f"churn-{tag}-{source.rsplit('.', 1)[1]}-{loop}-{attempt}"
            status, body = await _open_and_close(cluster.nginx_port, source, room)
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                opened[source] += 1
            elif status == 429:
                refusals.append(body)
                await asyncio.sleep(0.05)  # a client told to slow down, not a busy loop

    try:
        await asyncio.gather(
            *(churn(source, loop) for source in ADDRESSES for loop in range(LOOPS_PER_ADDRESS))
        )
        subscribed = _redis_calls(store, "subscribe") - subscribes
        unsubscribed = _redis_calls(store, "unsubscribe") - unsubscribes
        cpu = sum(cpu_seconds(pid) for pid in pids) - cpu
        figures = (
            f"opened per address {opened}, answers {statuses}; Redis SUBSCRIBE {subscribed}, "
            f"UNSUBSCRIBE {unsubscribed}; node CPU {cpu:.2f} s in {WINDOW_S} s"
        )
        print(figures)
        assert max(opened.values()) <= PER_ADDRESS_BOUND, figures
        assert min(opened.values()) >= 40, f"the burst must open: {figures}"
        assert refusals, figures
        refusal = json.loads(refusals[0])
        assert refusal["code"] == "rate_limited", refusal
        labels = {"endpoint": "events", "status": "429"}
        counted = sum(
            metric_value(http_get(f"{node.metrics_url}/metrics")[1], METRIC, labels)
            for node in cluster.nodes
        )
        assert counted >= len(refusals), f"{counted} counted for {len(refusals)} refusals"
    finally:
        store.close()
