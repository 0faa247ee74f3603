"""Red team 17: nginx writing an error line for every request it refuses for a client's rate.

nginx logs each refusal of ``limit_req`` and ``limit_conn`` at level ``error`` (their default
``*_log_level``), which the shipped ``error_log ... warn`` keeps, with the request line in it:
one address flooding the API with pipelined requests of a 2 KB target made 17,000-25,000 lines,
34-51 MB of nginx's log, in 3 s on main (a request line may be 8 KB). The refusals are
now logged at ``info``, below what the shipped configurations write: the 429s still answer.

A request announcing a body over ``client_max_body_size`` was refused 413 before ``limit_req``
was asked, and logged at ``error`` with no directive to lower it: one address on 16
connections made 4,755 lines, 9.7 MB, in 3 s. A body of seven digits or more (1,000,000 bytes)
is now refused 413 before any location, unlogged.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.adversarial.devcluster_shim import scaled
from tests.adversarial.httpraw import flood, request_bytes
from tests.adversarial.rawws import open_socket

WINDOW_S = 3.0
TARGET = "/api/rooms/logged/presence?pad=" + "a" * 1900
# nginx's lines read in the window (none expected); the pipe may hold 64 KiB more unread.
MAX_LOG_BYTES = 64 * 1024


def too_large_body(room: str) -> bytes:
    """A post announcing a 2 MiB body, over nginx's client_max_body_size (1 MiB): 413."""
    return request_bytes(
        "POST",
        f"/api/rooms/{room}/messages?pad=" + "a" * 1900,
        "roomcast",
        [("Content-Type", "application/json"), ("Content-Length", str(2 * 1024 * 1024))],
        close=False,
    )


async def status_of(port: int, request: bytes, source: str) -> bytes:
    reader, writer = await open_socket("127.0.0.1", port, source=source)
    try:
        writer.write(request)
        return (await asyncio.wait_for(reader.readuntil(b"\r\n"), scaled(10)))[9:12]
    finally:
        writer.close()


async def test_a_request_flood_refused_by_nginx_writes_no_line_per_request(cluster: Any) -> None:
    nginx = cluster.nginx
    before = len(nginx.lines)
    origins = {"nginx": 0, "node": 0, "closed": 0}
    statuses: dict[int, int] = {}
    await flood(
        cluster.nginx_port,
        request_bytes("GET", TARGET, "roomcast", close=False),
        time.monotonic() + WINDOW_S,
        origins,
        connections=8,
        pipelined=64,
        statuses=statuses,
    )
    # nginx writes a request's line to its stderr, a pipe, before it answers, and blocks once
    # the pipe holds 64 KiB: all but that much of the flood's lines are read by now.
    lines = nginx.lines[before:]
    logged = sum(len(line) + 1 for line in lines)
    limiting = [line for line in lines if "limiting" in line]
    figures = (
        f"one address, 8 connections x 64 pipelined requests of a {len(TARGET)}-byte target for "
        f"{WINDOW_S} s through nginx: {statuses}; nginx logged {len(lines)} lines ({logged} "
        f"bytes), {len(limiting)} of them 'limiting requests'"
    )
    print(figures, limiting[:1])
    assert statuses.get(429, 0) > 1000, figures
    assert logged < MAX_LOG_BYTES, figures


TOO_LARGE_WINDOW_S = 3.0
TOO_LARGE_CONNECTIONS = 16


async def _announce_too_large_bodies(
    port: int, deadline: float, statuses: dict[bytes, int]
) -> None:
    """One post announcing a body over the limit a connection, again and again (nginx closes
    each after its 413)."""
    request = too_large_body("too-large")
    while time.monotonic() < deadline:
        status = await status_of(port, request, "127.0.0.3")
        statuses[status] = statuses.get(status, 0) + 1


async def test_bodies_over_nginx_limit_write_a_bounded_number_of_lines(cluster: Any) -> None:
    """nginx checks client_max_body_size once the location is found, before limit_req (so
    these were not rate limited), and logs each at error level, with no directive to lower
    it: a body announced over the limit is now refused before any location."""
    nginx = cluster.nginx
    before = len(nginx.lines)
    statuses: dict[bytes, int] = {}
    deadline = time.monotonic() + TOO_LARGE_WINDOW_S
    await asyncio.gather(
        *(
            _announce_too_large_bodies(cluster.nginx_port, deadline, statuses)
            for _ in range(TOO_LARGE_CONNECTIONS)
        )
    )
    lines = nginx.lines[before:]  # all but the pipe's 64 KiB, as above
    logged = sum(len(line) + 1 for line in lines)
    figures = (
        f"one address announcing 2 MiB bodies on {TOO_LARGE_CONNECTIONS} connections for "
        f"{TOO_LARGE_WINDOW_S} s through nginx: {statuses}; nginx logged {len(lines)} lines "
        f"({logged} bytes)"
    )
    print(figures)
    assert statuses.get(b"413", 0) > 100, figures
    assert logged < MAX_LOG_BYTES, figures
