"""Shared compressed frames as a real client reads them, for every offer it may make
(`ROOMCAST_COMPRESSION`).

The node compresses a room's frame once per window (net/deflate.py) and writes the same bytes to
every compressed member, between that member's own answers (acks, history, errors) and pongs,
which websockets compresses or frames for it. websockets' own client, offering each parameter of
RFC 7692 (windows 9-15 asked of the node, its own window with and without a value, either side
without context takeover), must read every frame: room messages of 10 B to 60 KB (over the 4 KiB
window), non-ASCII, in the order sent, and its own answers in between.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from tests.adversarial.devcluster_shim import LocalCluster, scaled
from tests.adversarial.rawws import RawWebSocket
from tests.adversarial.readiness import until_ready

OFFERS: dict[str, dict[str, Any]] = {
    "as browsers offer it": {"client_max_window_bits": True},
    "its own window of 10": {"client_max_window_bits": 10},
    **{
        f"node window {bits}": {"client_max_window_bits": True, "server_max_window_bits": bits}
        for bits in range(9, 16)
    },
    "server_no_context_takeover": {
        "client_max_window_bits": True,
        "server_no_context_takeover": True,
    },
    "client_no_context_takeover": {
        "client_max_window_bits": True,
        "client_no_context_takeover": True,
    },
}
# 10 B to ~50 KB as sent (over the node's 4 KiB window); accents, CJK and an emoji.
TEXTS = ["é" * 5, "日本語テキスト" * 700, "ça va? 🙂 " * 2_000, "plain", "Ω" * 2_500]


@pytest.fixture
def cluster() -> Iterator[Any]:
    with LocalCluster(1, nginx=False, node_env={"ROOMCAST_COMPRESSION": "true"}) as running:
        yield running


async def member(port: int, offer: dict[str, Any]) -> ClientConnection:
    ws = await connect(
        f"ws://127.0.0.1:{port}/chat",
        compression=None,
        extensions=[ClientPerMessageDeflateFactory(**offer)],
        max_size=2**22,
    )
    assert ws.response is not None
    agreed = ws.response.headers.get("Sec-WebSocket-Extensions", "")
    assert "permessage-deflate" in agreed, (offer, agreed)
    return ws


async def next_of(ws: ClientConnection, kind: str, seen: list[dict[str, Any]]) -> dict[str, Any]:
    """The next event of ``kind``; what came before it is kept in ``seen``."""
    while True:
        event: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), scaled(10)))
        seen.append(event)
        if event["type"] == kind:
            return event


async def read_between_own_answers(ws: ClientConnection, name: str) -> list[dict[str, Any]]:
    """Everything the member reads while it sends, asks history, pings and errs, in order."""
    seen: list[dict[str, Any]] = []
    await ws.send(json.dumps({"type": "message", "text": f"from {name} ✓", "id": name}))
    await next_of(ws, "ack", seen)
    await ws.send(json.dumps({"type": "history", "id": f"h-{name}"}))
    await next_of(ws, "history", seen)
    await asyncio.wait_for(await ws.ping(), scaled(10))
    await ws.send(json.dumps({"type": "no such type"}))
    await next_of(ws, "error", seen)
    return seen


@pytest.mark.parametrize("offer", list(OFFERS))
async def test_every_offer_reads_shared_frames_between_its_own_answers(
    cluster: Any, offer: str
) -> None:
    node = cluster.nodes[0]
    await until_ready(node)
    room = f"offers-{uuid.uuid4().hex[:8]}"
    # Two members with the offer (they share the node's frames), one without compression.
    members = [await member(node.port, OFFERS[offer]) for _ in range(2)]
    sender = await RawWebSocket.connect("127.0.0.1", node.port)
    try:
        for i, ws in enumerate(members):
            await ws.send(json.dumps({"type": "join", "room": room, "username": f"m{i}"}))
            await next_of(ws, "joined", [])
        await sender.send({"type": "join", "room": room, "username": "sender"})
        await sender.next_text(type="joined", room=room)
        readers = [
            asyncio.ensure_future(read_between_own_answers(ws, f"m{i}"))
            for i, ws in enumerate(members)
        ]
        for text in TEXTS:
            await sender.send({"type": "message", "text": text})
        seen = await asyncio.gather(*readers)
        # What came after the member's own answers: the rest of the sender's messages.
        for ws, events in zip(members, seen, strict=True):
            while sum(
                e["type"] == "message" and e.get("username") == "sender" for e in events
            ) < len(TEXTS):
                events.append(json.loads(await asyncio.wait_for(ws.recv(), scaled(10))))
            await ws.close()
            assert ws.close_code == 1000, ws.close_code
    finally:
        for ws in members:
            await ws.close()
        await sender.close()
    for events in seen:
        got = [
            e["text"] for e in events if e["type"] == "message" and e.get("username") == "sender"
        ]
        assert got == TEXTS, [len(t) for t in got]
        history = next(e for e in events if e["type"] == "history")
        assert all(isinstance(m["text"], str) for m in history["messages"])
