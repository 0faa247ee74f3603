"""A refused API request whose client stops reading while the node lingers.

After a refusal the node ends its half of the connection and lingers for at most
ROOMCAST_CLOSE_TIMEOUT; then it closes. A graceful close waits until what the node still has to
send has left, so a client that pipelined reads behind it (answers still queued in the node when
the refusal was queued) and then stopped reading held the socket past the timer, for as long as
it kept its window shut.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from roomcast_dev.devcluster import LocalCluster

from tests.adversarial.devcluster_shim import scaled

READS = 8  # pipelined reads of the OpenAPI document before the refused head
# How much of the answers each connection leaves unread when it stops: one of them stops while
# the node's own buffer holds part of the last answer and the refusal behind it.
UNREAD = [8_000 * step for step in range(1, 16)]
CLOSE_TIMEOUT_S = 2.0
# Short, so that a connection whose refusal was not reached yet (the node waits for its client
# to read the answers before it reads on) is dropped as a slow reader within the test too.
IDLE_TIMEOUT_S = 3.0


@pytest.fixture
def short_timers() -> Iterator[Any]:
    env = {
        "ROOMCAST_CLOSE_TIMEOUT": str(CLOSE_TIMEOUT_S),
        "ROOMCAST_HTTP_IDLE_TIMEOUT": str(IDLE_TIMEOUT_S),
    }
    with LocalCluster(1, node_env=env) as running:
        yield running


READ = b"GET /api/openapi.json HTTP/1.1\r\nHost: roomcast\r\n\r\n"
TOO_LONG = b"GET /api/openapi.json HTTP/1.1\r\nHost: roomcast\r\nx: " + b"a" * 20_000 + b"\r\n\r\n"


def answer_size(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(10)) as sock:
        sock.sendall(READ.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
    # The same answer on a keep-alive connection has no Connection header.
    return len(got) - len(b"Connection: close\r\n")


def stop_reading(port: int, total: int, unread: int, source: str, tail: bytes) -> socket.socket:
    """Pipeline the reads and the refused head, read all but ``unread`` bytes, then stop."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind((source, 0))
    sock.settimeout(scaled(10))
    sock.connect(("127.0.0.1", port))
    sock.sendall(READ * READS + tail)
    got = 0
    while got < total - unread:
        chunk = sock.recv(min(4096, total - unread - got))
        if not chunk:
            break
        got += len(chunk)
    return sock


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# Behind the reads: a refused head (the node lingers, then closes at the close timeout), or
# nothing (the node waits for a next request, then closes at the idle timeout).
TAILS = {"refused": TOO_LONG, "idle": b""}


@pytest.mark.parametrize("tail", list(TAILS))
async def test_a_client_that_stops_reading_is_freed_at_the_timers(
    short_timers: Any, tail: str
) -> None:
    node = short_timers.nodes[0]
    size = await asyncio.to_thread(answer_size, node.port)
    baseline = open_fds(node.process.pid)
    socks = [
        await asyncio.to_thread(
            stop_reading, node.port, size * READS, unread, f"127.183.{i}.1", TAILS[tail]
        )
        for i, unread in enumerate(UNREAD, 1)
    ]
    try:
        held = open_fds(node.process.pid) - baseline
        # Every lingering socket must be gone once the close timer has passed.
        deadline = time.monotonic() + scaled(IDLE_TIMEOUT_S + CLOSE_TIMEOUT_S + 2)
        while open_fds(node.process.pid) > baseline and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)  # the node's descriptors polled: no event to wait for
        left = open_fds(node.process.pid) - baseline
        waited = scaled(IDLE_TIMEOUT_S + CLOSE_TIMEOUT_S + 2)
    finally:
        for sock in socks:
            sock.close()
    figures = (
        f"{len(socks)} connections, each {READS} reads of a {size}-byte answer ({tail}) "
        f"pipelined, reading stopped {UNREAD[0]}-{UNREAD[-1]} bytes short: the node held "
        f"{held} sockets at once, {left} still open {waited:.0f} s later "
        f"(close timeout {CLOSE_TIMEOUT_S} s, idle timeout {IDLE_TIMEOUT_S} s)"
    )
    print(figures)
    assert left <= 0, figures
