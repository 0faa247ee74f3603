"""Shared compressed frames as Node.js's `ws` reads them (`ROOMCAST_COMPRESSION`).

`ws` (the JS client's WebSocket on Node.js, a devDependency of clients/js) offers
permessage-deflate with ``client_max_window_bits`` by default, so the node serves it the room
frames it compresses once for every member (net/deflate.py). It must read room messages of 10 B
to ~50 KB (over the 4 KiB window), non-ASCII, in the order sent, and its own join answer.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.adversarial.devcluster_shim import LocalCluster, scaled
from tests.adversarial.rawws import RawWebSocket
from tests.adversarial.readiness import until_ready
from tests.adversarial.test_breakrt19_deflate_offers import TEXTS

ROOT = Path(__file__).resolve().parents[2]
WS_MODULE = ROOT / "clients" / "js" / "node_modules" / "ws" / "wrapper.mjs"
MEMBER = Path(__file__).with_name("js") / "deflate_member.mjs"


@pytest.fixture
def cluster() -> Iterator[Any]:
    with LocalCluster(1, nginx=False, node_env={"ROOMCAST_COMPRESSION": "true"}) as running:
        yield running


async def test_nodes_ws_reads_shared_compressed_frames(cluster: Any) -> None:
    node_js = shutil.which("node")
    assert node_js is not None, "Node.js is needed (make deps installs the JS client's modules)"
    assert WS_MODULE.exists(), f"{WS_MODULE} missing: run make deps"
    node = cluster.nodes[0]
    await until_ready(node)
    room = f"nodews-{uuid.uuid4().hex[:8]}"
    member = await asyncio.create_subprocess_exec(
        node_js,
        str(MEMBER),
        WS_MODULE.as_uri(),
        f"ws://127.0.0.1:{node.port}/chat",
        room,
        str(len(TEXTS)),
        stdout=asyncio.subprocess.PIPE,
    )
    assert member.stdout is not None
    events: list[dict[str, Any]] = []

    async def next_event() -> dict[str, Any]:
        assert member.stdout is not None
        line = await asyncio.wait_for(member.stdout.readline(), scaled(10))
        assert line, events
        event: dict[str, Any] = json.loads(line)
        events.append(event)
        return event

    sender = await RawWebSocket.connect("127.0.0.1", node.port)
    try:
        while (await next_event())["type"] != "joined":
            pass
        await sender.send({"type": "join", "room": room, "username": "sender"})
        await sender.next_text(type="joined", room=room)
        for text in TEXTS:
            await sender.send({"type": "message", "text": text})
        while (await next_event())["type"] not in ("closed", "failed"):
            pass
        assert await asyncio.wait_for(member.wait(), scaled(10)) == 0, events[-1]
    finally:
        if member.returncode is None:
            member.kill()
            await member.wait()
        await sender.close()
    assert "permessage-deflate" in events[0]["value"], events[0]
    got = [e["text"] for e in events if e["type"] == "message" and e.get("username") == "sender"]
    assert got == TEXTS, [len(t) for t in got]
    assert events[-1] == {"type": "closed", "code": 1000}, events[-1]
