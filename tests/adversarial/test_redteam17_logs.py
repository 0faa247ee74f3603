"""Red team 17: a log line per refused handshake.

Every refused WebSocket handshake (a malformed header, a bad origin or token) wrote an INFO
line, ~180 bytes, however many came: the per-address (100 a second) and node-wide (1,000 a
second) admission rates were all that bounded them. On main, five loopback addresses sending
2,000 handshakes with a malformed ``Origin`` made 2,001 log lines, 366 KB (at the node's
admission rate, ~15 GB a day). Refusals are all still counted in
``roomcast_auth_failures_total``; the log keeps the first few of each code, then about one a
second, each line saying how many went unlogged before it.

So were the connections the node closes for their client's behaviour: one that never answers a
ping ("no pong"), reads too slowly or outlives its token got a line each. On main, 300 sockets
of three addresses that never answered a ping made 300 "no pong" lines; a client may open and
abandon them at the handshake rates as well.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from roomcast_dev.devcluster import LocalCluster

from tests.adversarial.devcluster_shim import scaled
from tests.adversarial.observe import metric_sum, metrics_text
from tests.adversarial.rawws import RawWebSocket, open_socket

ADDRESSES = 5
ROUNDS = 20
PER_ROUND = 20  # per address, at once: 2,000 handshakes in all, within the admission rates
BAD_ORIGIN = (
    b"GET /ws HTTP/1.1\r\nHost: roomcast\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"Origin: not an origin\r\n\r\n"
)


DUPLICATE_ORIGINS = BAD_ORIGIN.replace(
    b"Origin: not an origin\r\n", b"Origin: https://a.example\r\nOrigin: https://b.example\r\n"
)


async def refused_status(port: int, source: str, request: bytes = BAD_ORIGIN) -> bytes:
    reader, writer = await open_socket("127.0.0.1", port, source=source)
    try:
        writer.write(request)
        answer = await asyncio.wait_for(reader.read(), scaled(30))
        return answer.split(b" ", 2)[1]
    finally:
        writer.close()


def refusal_lines(node: Any) -> list[str]:
    return [line for line in node.process.lines if "handshake refused" in line]


@pytest.fixture
def wide_admission() -> Iterator[Any]:
    """One node whose setup rate (1,000/s after 500 at once by default) lets all 2,000 bad
    handshakes reach the Origin check: at the default, 15 to 232 of them were answered 503 before
    it, depending on how fast they came and what the node had admitted before."""
    env = {"ROOMCAST_ADMISSION_RATE_PER_SECOND": "100000", "ROOMCAST_ADMISSION_BURST": "100000"}
    with LocalCluster(1, nginx=False, node_env=env) as running:
        yield running


async def test_bad_handshakes_write_a_bounded_number_of_log_lines(wide_admission: Any) -> None:
    node = wide_admission.nodes[0]
    lines_before = len(refusal_lines(node))
    counted_before = metric_sum(metrics_text(node.metrics_url), "roomcast_auth_failures_total")
    started = time.monotonic()
    statuses: dict[bytes, int] = {}
    for _ in range(ROUNDS):
        got = await asyncio.gather(
            *(
                refused_status(node.port, f"127.0.1.{1 + address}")
                for address in range(ADDRESSES)
                for _ in range(PER_ROUND)
            )
        )
        for status in got:
            statuses[status] = statuses.get(status, 0) + 1
    took = time.monotonic() - started
    sent = ADDRESSES * ROUNDS * PER_ROUND
    counted = metric_sum(metrics_text(node.metrics_url), "roomcast_auth_failures_total")
    # The log lines come through a pipe and a reader thread: a refusal of another code, the
    # first of its kind (so logged), comes after all of them.
    assert await refused_status(node.port, "127.0.1.9", DUPLICATE_ORIGINS) == b"400"
    await asyncio.to_thread(node.process.wait_for_line, lambda line: "duplicate_header" in line, 10)
    lines = [line for line in refusal_lines(node)[lines_before:] if "duplicate_header" not in line]
    logged_bytes = sum(len(line) + 1 for line in lines)
    figures = (
        f"{sent} handshakes with a malformed Origin from {ADDRESSES} addresses in {took:.1f} s: "
        f"{statuses}, {counted - counted_before:.0f} counted, {len(lines)} log lines "
        f"({logged_bytes} bytes)"
    )
    print(figures, lines[-1:] if lines else "")
    assert statuses == {b"400": sent}, figures
    assert counted - counted_before == sent, figures
    # A burst of 10 lines, then one a second: 2,001 lines on main.
    assert 1 <= len(lines) <= 10 + took + 2, figures


SILENT_ADDRESSES = 3
SILENT_PER_ADDRESS = 100


@pytest.fixture
def quick_pings() -> Iterator[Any]:
    """One node pinging every half second: a socket that never answers is closed in about one."""
    with LocalCluster(1, nginx=False, node_env={"ROOMCAST_PING_INTERVAL": "0.5"}) as running:
        yield running


async def test_sockets_that_never_answer_a_ping_write_a_bounded_number_of_log_lines(
    quick_pings: Any,
) -> None:
    node = quick_pings.nodes[0]
    started = time.monotonic()
    sockets = [
        await RawWebSocket.connect("127.0.0.1", node.port, source=f"127.0.3.{1 + address}")
        for address in range(SILENT_ADDRESSES)
        for _ in range(SILENT_PER_ADDRESS)
    ]
    try:
        # RawWebSocket never answers a ping: each is closed by the node's heartbeat.
        await asyncio.wait_for(
            asyncio.gather(*(ws.received.ended.wait() for ws in sockets)), scaled(60)
        )
        took = time.monotonic() - started
        counted = metric_sum(
            metrics_text(node.metrics_url), "roomcast_dead_connections_reaped_total"
        )
        assert await refused_status(node.port, "127.0.3.9", DUPLICATE_ORIGINS) == b"400"
        await asyncio.to_thread(
            node.process.wait_for_line, lambda line: "duplicate_header" in line, 10
        )
        lines = [line for line in node.process.lines if "no pong" in line]
        figures = (
            f"{len(sockets)} sockets of {SILENT_ADDRESSES} addresses that never answer a ping, "
            f"closed within {took:.1f} s: {counted:.0f} counted, {len(lines)} log lines "
            f"({sum(len(line) + 1 for line in lines)} bytes)"
        )
        print(figures, lines[-1:])
        assert counted >= len(sockets), figures
        assert 1 <= len(lines) <= 10 + took + 2, figures
    finally:
        for ws in sockets:
            await ws.close()
