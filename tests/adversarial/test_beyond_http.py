"""Beyond the issue: the HTTP API's own surface. Pipelined requests whose answers are never read,
a request head that never ends, path tricks, and the internal port's endpoints asked of nginx."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import pytest

from tests.adversarial.bystander import BystanderProbe
from tests.adversarial.devcluster_shim import scaled
from tests.adversarial.httpraw import http, request_bytes
from tests.adversarial.observe import MIB, rss_bytes
from tests.adversarial.rawws import open_socket

PIPELINED = 20_000
# 20,000 small answers (mostly 429s) queued for a reader that never reads: what the node keeps
# must stay within the per-reader bound (1 MiB) plus slack, never grow with the request count.
PIPELINE_RSS_GROWTH_MIB = 8
# A request head that never ends is dropped by the handshake timeout (ROOMCAST_HANDSHAKE_TIMEOUT,
# 10 s by default) plus this grace.
HEAD_TIMEOUT_S = 10.0
HEAD_GRACE_S = 3.0


async def test_pipelined_requests_never_read_pin_little(
    cluster: Any, probe: BystanderProbe
) -> None:
    node = cluster.nodes[0]
    host = f"127.0.0.1:{node.port}"
    one = request_bytes(
        "GET", f"/api/rooms/pipe-{uuid.uuid4().hex[:6]}/presence", host, close=False
    )
    _reader, writer = await open_socket("127.0.0.1", node.port, rcvbuf=4096)
    try:
        with probe.on(node) as bystander:
            before = rss_bytes(node.process.pid)
            writer.write(one * PIPELINED)
            with contextlib.suppress(TimeoutError, ConnectionError):  # it stopped reading: fine
                await asyncio.wait_for(writer.drain(), scaled(5))
            await asyncio.sleep(2)
            growth = (rss_bytes(node.process.pid) - before) / MIB
    finally:
        writer.close()
    figures = f"{PIPELINED} pipelined API requests never read: node RSS {growth:+.1f} MiB"
    print(figures)
    assert growth < PIPELINE_RSS_GROWTH_MIB, figures
    BystanderProbe.assert_fast(bystander, "a pipelined request flood")


async def test_a_request_head_that_never_ends_is_dropped(cluster: Any) -> None:
    node = cluster.nodes[0]
    reader, writer = await open_socket("127.0.0.1", node.port)
    started = time.monotonic()
    writer.write(b"GET /api/rooms/slow/presence HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    try:
        async with asyncio.timeout(scaled(HEAD_TIMEOUT_S + HEAD_GRACE_S)):
            while True:  # one more byte every second, as a slowloris does
                await asyncio.sleep(1)
                writer.write(b"a")
                await writer.drain()
                if reader.at_eof():
                    break
                try:
                    data = await asyncio.wait_for(reader.read(1024), 0.01)
                except TimeoutError:
                    continue
                if not data or b"HTTP/1.1 4" in data:
                    break
        dropped_after: float | None = time.monotonic() - started
    except (TimeoutError, ConnectionError):
        dropped_after = None if not reader.at_eof() else time.monotonic() - started
    finally:
        writer.close()
    print(f"slowloris API head: dropped after {dropped_after}")
    assert dropped_after is not None, (
        f"a request head trickling one byte a second was still open after "
        f"{HEAD_TIMEOUT_S + HEAD_GRACE_S:.0f} s"
    )


@pytest.mark.parametrize(
    "target",
    [
        "/api/rooms/..%2F..%2Fetc%2Fpasswd/history",
        "/api/rooms/%00/history",
        "/api/rooms/a/history/../../../metrics",
        "/api/../metrics",
    ],
)
async def test_path_tricks_are_plain_refusals(cluster: Any, target: str) -> None:
    answer = await http(cluster.nginx_port, "GET", target)
    assert answer.status in (400, 404), (target, answer.status, answer.body[:200])


@pytest.mark.parametrize("target", ["/metrics", "/readyz", "/api/metrics", "/chat/../metrics"])
async def test_internal_endpoints_are_not_public(cluster: Any, target: str) -> None:
    answer = await http(cluster.nginx_port, "GET", target)
    assert b"roomcast_" not in answer.body and answer.status != 200, (target, answer.status)
