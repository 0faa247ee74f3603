"""A head past 16 KiB pipelined behind another request, straight to a node.

A head buffered behind the request being answered was not counted as it arrived: it was parsed
whole by h11 (in Python, a header at a time) and only then measured (``parsed_head_bytes``) and
its headers counted. The event loop reads up to 256 KiB at once, so one connection's second head
could hold ~25,000 one-letter headers in 100 KB: on main each such connection cost the node
~100-250 ms of CPU before its 431, where a head of the same size sent first is refused at 16 KiB
by counting, before h11 sees it (``wire/http_heads.py``).
"""

from __future__ import annotations

import asyncio
import itertools
import re

from tests.adversarial.devcluster_shim import scaled
from tests.adversarial.observe import cpu_seconds
from tests.adversarial.rawws import open_socket

CONNECTIONS = 6
HEADERS = 25_000  # "a:\r\n" each: a ~100 KB head, under the event loop's 256 KiB read
# What one such connection may cost the node: an ordinary refused request costs ~1-3 ms here.
NODE_CPU_PER_CONNECTION_MS = 25.0

_addresses = itertools.count(1)

FIRST = b"GET /api/rooms/lobby/history?limit=1 HTTP/1.1\r\nHost: roomcast\r\n\r\n"


def second_head() -> bytes:
    lines = b"a:\r\n" * HEADERS
    return b"GET /api/rooms/lobby/history HTTP/1.1\r\nHost: roomcast\r\n" + lines + b"\r\n"


async def pipelined(port: int, source: str, split: int) -> list[int]:
    """The first request with ``split`` bytes of the second head, then the rest of it."""
    second = second_head()
    reader, writer = await open_socket("127.0.0.1", port, source=source)
    try:
        writer.write(FIRST + second[:split])
        writer.write(second[split:])
        raw = await asyncio.wait_for(reader.read(), scaled(10))
    finally:
        writer.close()
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


async def test_a_huge_pipelined_head_is_refused_before_it_is_parsed(cluster: object) -> None:
    node = cluster.nodes[0]  # type: ignore[attr-defined]
    pid = node.process.pid
    statuses: list[list[int]] = []
    before = cpu_seconds(pid)
    for index in range(CONNECTIONS):
        # Half of the second head's first byte alone behind the first request (the rest comes
        # after it), half the whole head in the same write.
        split = 1 if index % 2 else len(second_head())
        statuses.append(await pipelined(node.port, f"127.181.{next(_addresses)}.1", split))
    spent_ms = (cpu_seconds(pid) - before) * 1000 / CONNECTIONS
    figures = (
        f"{CONNECTIONS} connections, each a request then a {len(second_head())}-byte head of "
        f"{HEADERS} headers behind it: statuses {statuses}, the node's CPU {spent_ms:.1f} ms a "
        f"connection (bound {NODE_CPU_PER_CONNECTION_MS} ms)"
    )
    print(figures)
    assert all(answer == [200, 431] for answer in statuses), figures
    assert spent_ms < NODE_CPU_PER_CONNECTION_MS, figures
