"""Debian's Chromium reading the room frames a node compresses once for all its members
(`ROOMCAST_COMPRESSION`, net/deflate.py), through nginx.

Chromium offers permessage-deflate with ``client_max_window_bits``, so the node serves it the
shared frames: a 4 KiB window, no context taken over. Messages of 10 B to ~50 KB (over the
window), non-ASCII, must arrive whole and in the order sent, then the page's own history answer
and a clean close. Chromium inflates with a window larger than the one agreed (frames written in
a 32 KiB window read as well), so the window itself is checked with websockets' and Node.js's
clients (tests/adversarial/test_breakrt19_deflate_offers.py, test_breakrt19_deflate_node_ws.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from roomcast_dev.devcluster import LocalCluster
from websockets.sync.client import connect

from tests.adversarial.test_breakrt19_deflate_offers import TEXTS
from tests.support.chatpage import ChatPage
from tests.support.cluster import FAST_ENV

# In the page: a WebSocket of its own that joins, tells the test it joined, then collects the
# messages of `sender` until it has `count` of them; answers the agreed extensions and events.
COLLECT = """
const [url, room, count, done] = arguments;
const ws = new WebSocket(url);
const events = [];
let read = 0;
ws.onopen = () => ws.send(JSON.stringify({type: "join", room, username: "page", id: "j"}));
ws.onmessage = (message) => {
  const event = JSON.parse(message.data);
  events.push(event);
  if (event.type === "joined") window.breakrt19Joined = true;
  if (event.type === "message" && event.username === "sender" && ++read === count) {
    ws.send(JSON.stringify({type: "history", id: "h"}));
  }
  if (event.type === "history") ws.close(1000);
};
ws.onclose = (close) => done({extensions: ws.extensions, code: close.code, events});
"""


@pytest.fixture
def compressing_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(1, node_env={**FAST_ENV, "ROOMCAST_COMPRESSION": "true"}) as running:
        yield running


def test_chromium_reads_shared_compressed_frames(
    compressing_cluster: LocalCluster, chromium: Callable[[], ChatPage]
) -> None:
    page = chromium()
    cluster = compressing_cluster
    room = f"deflate-{uuid.uuid4().hex[:8]}"
    page.driver.get(cluster.http_url + "/")  # the page's origin, which the node admits
    page.driver.set_script_timeout(60)
    ws_url = cluster.http_url.replace("http", "ws", 1) + "/chat"
    page.driver.execute_script(
        "window.breakrt19 = null; window.breakrt19Joined = false;"
        "(async (...args) => {" + COLLECT.replace("arguments", "args") + "})("
        "arguments[0], arguments[1], arguments[2], (r) => { window.breakrt19 = r; });",
        ws_url,
        room,
        len(TEXTS),
    )
    page.wait_until(
        "the page's socket joined",
        lambda p: p.driver.execute_script("return window.breakrt19Joined"),
    )
    send_all(cluster, room)
    result: dict[str, Any] = page.wait_until(
        "the page's socket closed", lambda p: p.driver.execute_script("return window.breakrt19")
    )
    events = result["events"]
    assert "permessage-deflate" in result["extensions"], result["extensions"]
    got = [e["text"] for e in events if e["type"] == "message" and e.get("username") == "sender"]
    assert got == TEXTS, [len(t) for t in got]
    assert [e["type"] for e in events][-1] == "history" and result["code"] == 1000, result["code"]


def send_all(cluster: LocalCluster, room: str) -> None:
    """The sender, straight to the node, uncompressed; returns once every message is acked."""
    with connect(f"ws://127.0.0.1:{cluster.nodes[0].port}/chat", compression=None) as ws:
        ws.send(json.dumps({"type": "join", "room": room, "username": "sender", "id": "j"}))
        while json.loads(ws.recv(timeout=10)).get("id") != "j":
            pass
        for n, text in enumerate(TEXTS):
            ws.send(json.dumps({"type": "message", "text": text, "id": n}))
        acked: set[int] = set()
        while len(acked) < len(TEXTS):
            event = json.loads(ws.recv(timeout=10))
            assert event["type"] != "error", event
            if event["type"] == "ack":
                acked.add(event["id"])
