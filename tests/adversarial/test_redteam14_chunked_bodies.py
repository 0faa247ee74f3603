"""Red team 14: an API request body sent in thousands of one-byte chunks.

The node bounds a body by its decoded bytes (``ROOMCAST_MAX_FRAME_BYTES``, 64 KiB), not by how
many pieces it comes in: h11 parses each chunk of a chunked body in Python, one event each, and
a 60 KB post in 60,000 one-byte chunks (360 KB on the wire, all in one write) took about a second
of the node's CPU, before any limit of the API (its rate is checked once the request is parsed).
nginx re-frames a chunked body in its own pieces, so this needs the node's port: what a TCP load
balancer, or a deployment's own proxy that passes bodies through as sent, gives every client.
On main, two connections of one address sending three such posts each held a bystander at
seconds p99. A body now comes in at most 16 pieces plus one per 256 bytes of it (a client
sending full TCP segments, 536 bytes and more, never needs more); beyond that it is refused 400
``invalid_request`` and the connection closed.

The same chunked post may end with trailer lines, which h11 parses a line at a time as it does a
head's, counted by nothing: 10,000 of them (60 KB in one write) cost the node ~33 ms a request
(an ordinary post ~2 ms), answered 201. A chunked body's line ends are now counted as they
arrive (two a chunk, and 128 trailer lines), and such a post is refused 400.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from tests.adversarial.bystander import BystanderProbe
from tests.adversarial.devcluster_shim import scaled
from tests.adversarial.observe import cpu_seconds
from tests.adversarial.rawws import open_socket

CONNECTIONS = 2
REQUESTS_PER_CONNECTION = 3  # one after another: ~1 s of the node's CPU each before
TEXT_CHARS = 60_000
# A refused one costs a new connection and the read of what was sent: 2-15 ms measured on a
# loaded machine (the node's other work of the time included); before the bound, 0.6-1 s.
NODE_CPU_PER_REQUEST_MS = 50.0


TRAILER_LINES = 10_000
TRAILER_REQUESTS = 10
# An ordinary post costs ~2 ms; with 10,000 trailer lines ~33 ms before they were counted.
NODE_CPU_PER_TRAILED_REQUEST_MS = 15.0


def post_with_trailers(room: str) -> bytes:
    body = b'{"text":"trailed","username":"trailer"}'
    head = (
        f"POST /api/rooms/{room}/messages HTTP/1.1\r\nHost: roomcast\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    trailers = b"a: b\r\n" * TRAILER_LINES
    return head + b"%x\r\n%s\r\n0\r\n" % (len(body), body) + trailers + b"\r\n"


def post_in_chunks(room: str, chunk: int) -> bytes:
    body = b'{"text":"' + b"a" * TEXT_CHARS + b'","username":"chunky"}'
    pieces = [
        b"%x\r\n%s\r\n" % (len(body[i : i + chunk]), body[i : i + chunk])
        for i in range(0, len(body), chunk)
    ]
    head = (
        f"POST /api/rooms/{room}/messages HTTP/1.1\r\nHost: roomcast\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    return head + b"".join(pieces) + b"0\r\n\r\n"


async def _post(port: int, request: bytes, statuses: dict[int, int]) -> None:
    """One request on its own connection, answered (the node may close before reading it all)."""
    reader, writer = await open_socket("127.0.0.1", port)
    try:
        writer.write(request)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        status = await asyncio.wait_for(reader.readuntil(b"\r\n"), scaled(30))
        code = int(status.split(b" ", 2)[1])
        statuses[code] = statuses.get(code, 0) + 1
    finally:
        writer.close()


async def _posts(port: int, request: bytes, statuses: dict[int, int]) -> None:
    for _ in range(REQUESTS_PER_CONNECTION):
        await _post(port, request, statuses)


async def test_bodies_in_one_byte_chunks_cost_the_node_little(
    cluster: Any, probe: BystanderProbe
) -> None:
    node = cluster.nodes[0]
    request = post_in_chunks("chunky", 1)
    statuses: dict[int, int] = {}
    with probe.on(node) as bystander:
        before = cpu_seconds(node.process.pid)
        await asyncio.gather(*(_posts(node.port, request, statuses) for _ in range(CONNECTIONS)))
        spent = cpu_seconds(node.process.pid) - before
    answered = sum(statuses.values())
    per_request_ms = spent * 1000 / max(1, answered)
    figures = (
        f"{CONNECTIONS} connections each posting {REQUESTS_PER_CONNECTION} texts of "
        f"{TEXT_CHARS} characters in one-byte chunks ({len(request)} bytes a request) straight "
        f"to a node: statuses {dict(sorted(statuses.items()))}, the node's CPU {spent:.2f} s, "
        f"{per_request_ms:.1f} ms a request (bound {NODE_CPU_PER_REQUEST_MS} ms)"
    )
    print(figures, bystander[0].describe())
    assert answered == CONNECTIONS * REQUESTS_PER_CONNECTION, figures
    assert per_request_ms < NODE_CPU_PER_REQUEST_MS, figures
    BystanderProbe.assert_fast(bystander, "bodies in one-byte chunks")


async def test_a_body_in_full_segments_still_passes(cluster: Any) -> None:
    """A chunked post in pieces of 536 bytes (the smallest TCP segment a host must take), each
    its own write, is answered 201."""
    whole = post_in_chunks("segments", 536)
    head, _, body = whole.partition(b"\r\n\r\n")
    reader, writer = await open_socket("127.0.0.1", cluster.nodes[0].port)
    try:
        writer.write(head + b"\r\n\r\n")
        for start in range(0, len(body), 544):  # a chunk and its framing a write
            writer.write(body[start : start + 544])
            await writer.drain()
            await asyncio.sleep(0)
        status = await asyncio.wait_for(reader.readuntil(b"\r\n"), scaled(10))
    finally:
        writer.close()
    assert status.startswith(b"HTTP/1.1 201"), status


async def test_thousands_of_trailer_lines_cost_the_node_little(cluster: Any) -> None:
    node = cluster.nodes[0]
    request = post_with_trailers("trailed")
    statuses: dict[int, int] = {}
    before = cpu_seconds(node.process.pid)
    for _ in range(TRAILER_REQUESTS):
        await _post(node.port, request, statuses)
    spent = cpu_seconds(node.process.pid) - before
    per_request_ms = spent * 1000 / TRAILER_REQUESTS
    figures = (
        f"{TRAILER_REQUESTS} chunked posts ending with {TRAILER_LINES} trailer lines "
        f"({len(request)} bytes, one write each) straight to a node: statuses "
        f"{dict(sorted(statuses.items()))}, the node's CPU {spent:.2f} s, {per_request_ms:.1f} ms "
        f"a request (bound {NODE_CPU_PER_TRAILED_REQUEST_MS} ms)"
    )
    print(figures)
    assert per_request_ms < NODE_CPU_PER_TRAILED_REQUEST_MS, figures
    assert statuses == {400: TRAILER_REQUESTS}, figures
