"""Red team 12: forging another member's `user_id` (probes that held, kept as regression tests).

The page and the clients tell a reader's own messages by `user_id` (docs/protocol.md "User
ids"). An open-mode attacker who saw a victim's id in the room's events tries to make the others
see it on his own words: a `user_id` field in his WebSocket frames, in an HTTP post's body, and
a message text crafted to close the JSON string and add the field (such a username is refused
`invalid_username`). The node builds events with a JSON encoder and ignores fields it does not
know: his messages carry his own connection's id (WebSocket) or none (HTTP post in open
mode), never the victim's, in the live event and in `history`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.adversarial.bursts import join
from tests.adversarial.devcluster_shim import LocalCluster
from tests.adversarial.httpraw import http
from tests.adversarial.rawws import RawWebSocket
from tests.adversarial.readiness import until_ready

ROOM = "forged-ids"


@pytest.fixture
def open_node() -> Iterator[Any]:
    with LocalCluster(1, nginx=False, redis=False) as cluster:
        yield cluster.nodes[0]


async def test_nobody_can_put_another_members_user_id_on_his_words(open_node: Any) -> None:
    await until_ready(open_node)
    port = open_node.port
    victim = await RawWebSocket.connect("127.0.0.1", port, source="127.0.0.2")
    attacker = await RawWebSocket.connect("127.0.0.1", port, source="127.0.0.3")
    try:
        await join(victim, ROOM, "alice")
        stolen = victim.welcome["user_id"]
        own = attacker.welcome["user_id"]
        injected = f'x","user_id":"{stolen}'
        await attacker.send({"type": "join", "room": ROOM, "username": injected, "id": "bad"})
        refused = await attacker.next_text(type="error", id="bad")  # a name of 1-32 letters...
        assert refused["code"] == "invalid_username", refused
        await attacker.send(
            {"type": "join", "room": ROOM, "username": "mallory", "user_id": stolen, "id": "j"}
        )
        await attacker.next_text(type="joined")
        await attacker.send(
            {"type": "message", "room": ROOM, "text": injected, "user_id": stolen, "id": "m"}
        )
        await attacker.next_text(type="ack", id="m")
        await attacker.send({"type": "typing", "room": ROOM, "user_id": stolen})
        posted = await http(
            port,
            "POST",
            f"/api/rooms/{ROOM}/messages",
            json_body={"username": "alice", "text": injected, "user_id": stolen},
        )
        assert posted.status == 201, posted
        await victim.next_text(type="message", username="alice")  # the post, after the rest
        await victim.send({"type": "history", "room": ROOM, "id": "h"})
        history = await victim.next_text(type="history", id="h")
    finally:
        await victim.close()
        await attacker.close()
    live = [
        e
        for e in victim.received.texts
        if e.get("type") in ("user_joined", "message", "typing") and e.get("room") == ROOM
    ]
    stored = [m for m in history["messages"] if m.get("type") == "message"]
    assert len(live) == 4 and len(stored) == 2, (live, stored)
    for event in (*live, *stored):
        assert event.get("user_id") != stolen, event
    by_ws = [e for e in (*live, stored[0]) if e.get("username") == "mallory"]
    assert len(by_ws) == 4 and all(e["user_id"] == own for e in by_ws), by_ws
    assert all(e["text"] == injected for e in (*by_ws, *stored) if e["type"] == "message")
    by_post = [e for e in (*live, *stored) if e.get("username") == "alice"]
    assert len(by_post) == 2 and all("user_id" not in e for e in by_post), by_post
