"""Node-wide handshake admission against REAL nginx and a node: a burst of new clients above the
admission rate is refused with 503 + Retry-After (through nginx), the clients wait for it and all
join in the end, and a member already connected keeps a short round trip meanwhile."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from roomcast_dev.devcluster import LocalCluster

from roomcast.client import Backoff, Joined, Reconnecting, RoomcastClient
from tests.support.cluster import FAST_ENV, http_get, metric_value
from tests.support.wsclient import scaled

pytestmark = pytest.mark.integration

RATE, BURST = 20, 5
ADMISSION_ENV = dict(
    FAST_ENV,
    ROOMCAST_ADMISSION_RATE_PER_SECOND=str(RATE),
    ROOMCAST_ADMISSION_BURST=str(BURST),
    ROOMCAST_ADMISSION_MAX_RETRY_AFTER="4",
)
STORM = 60  # three seconds' worth of the rate, twelve bursts


async def handshake_status(port: int, source: str = "127.0.0.1") -> tuple[int, dict[str, str]]:
    """One raw WebSocket upgrade through nginx (from ``source``, which nginx passes on as the
    client's address): the status and headers of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(
            b"GET /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), scaled(10))
    finally:
        writer.close()
    status_line, *lines = head.decode().split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        if value:
            headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


async def test_a_burst_over_the_rate_is_told_to_retry_and_everyone_joins() -> None:
    room = "adm-" + uuid.uuid4().hex[:8]
    with LocalCluster(1, redis=False, nginx=True, node_env=ADMISSION_ENV) as cluster:
        metrics_url = f"{cluster.nodes[0].metrics_url}/metrics"
        bystander = RoomcastClient(cluster.url, "bystander", rooms=[room])
        async with bystander:
            await bystander.join(room, timeout=scaled(10))
            clients = [
                RoomcastClient(cluster.url, f"c{i}", rooms=[room], backoff=Backoff(0.5, 4.0))
                for i in range(STORM)
            ]
            retries: list[Reconnecting] = []

            async def run(client: RoomcastClient) -> Joined:
                async def watch() -> None:
                    async for event in client:
                        if isinstance(event, Reconnecting):
                            retries.append(event)

                watcher = asyncio.create_task(watch())
                try:
                    return await client.join(room, timeout=scaled(60))
                finally:
                    watcher.cancel()

            round_trips: list[float] = []
            storm_over = asyncio.Event()

            async def ping_pong() -> None:
                # The member already there talks to the room all through the storm.
                seq = 0
                while not storm_over.is_set():
                    seq += 1
                    started = time.monotonic()
                    outgoing = await bystander.send(room, f"rt{seq}")
                    await asyncio.wait_for(outgoing.wait(), scaled(10))
                    round_trips.append(time.monotonic() - started)
                    await asyncio.sleep(0.02)

            async with asyncio.TaskGroup() as group:
                pinger = group.create_task(ping_pong())
                for client in clients:
                    await client.__aenter__()
                try:
                    joined = await asyncio.gather(*(run(c) for c in clients))
                finally:
                    storm_over.set()
                    await pinger
                    for client in clients:
                        await client.__aexit__(None, None, None)

        assert len(joined) == STORM and all(j.room == room for j in joined)
        _, text = http_get(metrics_url)
        refused = metric_value(text, "roomcast_handshakes_rejected_total", {"status": "503"})
        assert refused > 0, "a burst of 60 over a rate of 20/s (burst 5) was never refused"
        busy = [r for r in retries if r.cause == "HTTP 503"]
        assert busy, f"no client saw the 503: {retries[:5]}"
        # Retry-After is at least a second, and the client never comes back before it.
        assert all(r.delay >= 1.0 for r in busy), [r.delay for r in busy if r.delay < 1.0]
        assert round_trips, "the bystander never completed a round trip"
        assert max(round_trips) < scaled(1.0), sorted(round_trips)[-5:]

        # The signal itself, through nginx: a 503 that carries Retry-After, before any upgrade.
        answers = [await handshake_status(cluster.nginx_port) for _ in range(BURST + 10)]
        busy_answers = [headers for status, headers in answers if status == 503]
        assert busy_answers, [status for status, _ in answers]
        assert all(1 <= int(h["retry-after"]) <= 4 for h in busy_answers), busy_answers


# One address floods handshakes: refused on its own (429), before it takes the node's tokens.
PER_ADDRESS_RATE, PER_ADDRESS_BURST = 2, 8
PER_ADDRESS_ENV = dict(
    FAST_ENV,
    ROOMCAST_ADMISSION_RATE_PER_SECOND="5",
    ROOMCAST_ADMISSION_BURST="20",
    ROOMCAST_ADMISSION_PER_ADDRESS_RATE_PER_SECOND=str(PER_ADDRESS_RATE),
    ROOMCAST_ADMISSION_PER_ADDRESS_BURST=str(PER_ADDRESS_BURST),
)
FLOOD = 100  # five times the node's whole burst, from one address


async def test_one_address_flooding_handshakes_does_not_make_others_wait() -> None:
    with LocalCluster(1, redis=False, nginx=True, node_env=PER_ADDRESS_ENV) as cluster:
        metrics_url = f"{cluster.nodes[0].metrics_url}/metrics"
        started = time.monotonic()
        answers = [await handshake_status(cluster.nginx_port, "127.0.0.2") for _ in range(FLOOD)]
        elapsed = time.monotonic() - started
        statuses = [status for status, _ in answers]
        accepted = statuses.count(101)
        # The address's burst, and what its rate made while the flood ran.
        assert PER_ADDRESS_BURST <= accepted <= PER_ADDRESS_BURST + PER_ADDRESS_RATE * elapsed + 1
        assert set(statuses) == {101, 429}, statuses
        refused = [headers for status, headers in answers if status == 429]
        assert all(int(headers["retry-after"]) >= 1 for headers in refused)
        # Other addresses still get in at once: the flood took at most its own share of the
        # node's burst (20), not all of it (it would have been answered 503).
        for source in ("127.0.0.3", "127.0.0.4", "127.0.0.5"):
            status, _ = await handshake_status(cluster.nginx_port, source)
            assert status == 101, (source, status)
        _, text = http_get(metrics_url, timeout=scaled(5))
        assert metric_value(text, "roomcast_handshakes_rejected_total", {"status": "429"}) == (
            FLOOD - accepted
        )
        assert metric_value(text, "roomcast_handshakes_rejected_total", {"status": "503"}) == 0
