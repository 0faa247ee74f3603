"""Red team 15: event streams count against the node's setups per second.

docs/security.md bounds new WebSocket handshakes per node (`ROOMCAST_ADMISSION_RATE_PER_SECOND`/
`_BURST`, 1,000/s after 500, then 503 with `Retry-After`): a setup (handshake and join) costs the
node's CPU, and when a node dies all its clients come back to the others at once. An event
stream's open costs as much (a Redis subscription, a history read, a resume from
`Last-Event-ID`), and a dead node's streams come back at once too, but streams were counted in no
node-wide bound: only per client. Now a stream takes a token of the same bucket as the
handshakes, after its client's own limits, and is refused 503 `unavailable` with `Retry-After`
(nginx passes a refused GET to the next node) when there is none.

Real redis-server and a node with a small setup burst; many loopback addresses, each within
every limit of its own.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.adversarial.devcluster_shim import LocalCluster, scaled
from tests.adversarial.httpraw import request_bytes
from tests.adversarial.rawws import HandshakeRefused, RawWebSocket, open_socket, read_head
from tests.adversarial.readiness import until_ready

SETUP_BURST = 20
ADDRESSES = [f"127.0.3.{n}" for n in range(10, 70)]  # 60, each opening one stream


@pytest.fixture
def small_setup_burst() -> Iterator[Any]:
    env = {
        "ROOMCAST_ADMISSION_BURST": str(SETUP_BURST),
        "ROOMCAST_ADMISSION_RATE_PER_SECOND": "0.1",
    }
    with LocalCluster(1, nginx=False, node_env=env) as cluster:
        yield cluster.nodes[0]


async def _open(port: int, source: str, room: str) -> tuple[int, str, bytes, asyncio.StreamWriter]:
    reader, writer = await open_socket("127.0.0.1", port, source=source)
    target = f"/api/rooms/{room}/events"
    writer.write(request_bytes("GET", target, f"127.0.0.1:{port}", [], close=False))
    status, head = await read_head(reader)
    body = b""
    if status != 200:
        length = int(head.lower().split("content-length:", 1)[1].split("\r\n", 1)[0])
        body = await asyncio.wait_for(reader.readexactly(length), scaled(10))
    return status, head, body, writer


async def test_event_streams_take_the_nodes_setup_tokens(small_setup_burst: Any) -> None:
    node = small_setup_burst
    await until_ready(node)
    tag = uuid.uuid4().hex[:6]
    answers = await asyncio.gather(
        *(_open(node.port, source, f"setups-{tag}-{i}") for i, source in enumerate(ADDRESSES))
    )
    try:
        statuses = [status for status, _, _, _ in answers]
        opened = statuses.count(200)
        figures = f"{opened} of {len(ADDRESSES)} streams opened at once with a setup burst of "
        figures += f"{SETUP_BURST}: answers {sorted(set(statuses))}"
        print(figures)
        assert opened <= SETUP_BURST, figures
        assert opened >= SETUP_BURST - 2, figures  # a token or two may have gone meanwhile
        refused = [(head, body) for status, head, body, _ in answers if status == 503]
        assert len(refused) == len(ADDRESSES) - opened, figures
        head, body = refused[0]
        assert "retry-after:" in head.lower(), head
        assert json.loads(body)["code"] == "unavailable", body
        # One bucket: the streams took the tokens a WebSocket handshake would have.
        with pytest.raises(HandshakeRefused):
            ws = await RawWebSocket.connect("127.0.0.1", node.port, source="127.0.3.200")
            await ws.close()
    finally:
        for _, _, _, writer in answers:
            writer.close()
