"""Red team 9: the OpenAPI document, asked over and over by one address without credentials.

docs/http-api.md: every API request is limited per caller (`ROOMCAST_API_RATE_*`, 20/s and 40
at once per API key, token subject or open-mode address). `GET /api/openapi.json` was answered
before the caller was known and counted against nothing: a ~45-byte request, no credential,
answered with the whole document (~35 KB, serialized afresh each time). Four pipelined
connections of one address straight to a node asking it 250 times each got all 1,000 answers:
35 MB (node CPU 0.4 s). Now the document is serialized once, and its requests spend the
address's API rate like any other caller's (429 past it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest

from tests.adversarial.devcluster_shim import LocalCluster, scaled
from tests.adversarial.observe import MIB, cpu_seconds

CONNECTIONS = 4
PIPELINED = 250  # requests written at once on each
# An address's API rate: its burst (40) and 20/s over the few seconds of the attack. Bounded at
# 150 answers (before: every one of the 1,000).
DOCUMENTS_FOR_ONE_ADDRESS = 150
API_KEY = "redteam9-openapi-" + "0123456789abcdef" * 2


@pytest.fixture(scope="module")
def keyed_node() -> Any:
    """One node whose API takes credentials (an API key), so nobody unknown is a caller."""
    with LocalCluster(1, nginx=False, node_env={"ROOMCAST_API_KEYS": API_KEY}) as cluster:
        yield cluster.nodes[0]


async def ask_many(port: int, statuses: list[int], received: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        b"GET /api/openapi.json HTTP/1.1\r\nHost: node\r\nX-Forwarded-For: 203.0.113.91\r\n\r\n"
    )
    writer.write(request * PIPELINED)
    try:
        for _ in range(PIPELINED):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), scaled(10))
            statuses.append(int(head.split(b" ", 2)[1]))
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            received.append(len(head) + len(await reader.readexactly(length)))
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_one_address_cannot_ask_for_the_openapi_document_without_end(
    keyed_node: Any,
) -> None:
    node = keyed_node
    statuses: list[int] = []
    received: list[int] = []
    cpu_before, started = cpu_seconds(node.process.pid), time.monotonic()
    await asyncio.gather(*(ask_many(node.port, statuses, received) for _ in range(CONNECTIONS)))
    elapsed = time.monotonic() - started
    spent = cpu_seconds(node.process.pid) - cpu_before
    documents = statuses.count(200)
    figures = (
        f"{CONNECTIONS} connections of one address pipelining {PIPELINED} requests for the "
        f"OpenAPI document each: {documents} answered with it (bound "
        f"{DOCUMENTS_FOR_ONE_ADDRESS}), {statuses.count(429)} refused 429, "
        f"{sum(received) / MIB:.1f} MiB sent in {elapsed:.1f} s, node CPU {spent:.2f} s"
    )
    print(figures)
    assert documents <= DOCUMENTS_FOR_ONE_ADDRESS, figures
    assert documents >= 1, figures  # still served, to whoever asks within the rate
