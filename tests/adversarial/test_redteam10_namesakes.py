"""Red team 10: two users whose tokens carry the same `name` cannot be told apart.

With tokens on, a `join`'s `username` is ignored and the name comes from the token (`name`,
else `sub`). Applications let people pick display names, so two different users (`sub` alice
and mallory) may both be "Alice". Every event other members get names the author by that name
alone: mallory's messages, typing and presence are alice's as far as any client can tell (the
shipped page even marks a namesake's messages as the reader's own: `own` is `username ===`
its own name). Before, the two messages differed only in text, offset and timestamp. Now
every event about a user carries a `user_id`: a keyed hash of the `sub` (core/user_ids.py), the
same on every node, never the `sub` itself (often an e-mail address); refusing a second "Alice"
would have refused real namesakes.
"""

from __future__ import annotations

from typing import Any

from tests.adversarial.rawws import RawWebSocket
from tests.adversarial.readiness import until_ready
from tests.adversarial.tokens import es256

ROOM = "namesakes"
SHOWN_ANYWAY = {"text", "offset", "timestamp", "epoch", "message_id"}  # differ per message


async def _member(node: Any, private: Any, sub: str, name: str) -> RawWebSocket:
    token = es256(private, sub=sub, name=name)
    ws = await RawWebSocket.connect("127.0.0.1", node.port, path=f"/chat?token={token}")
    await ws.send({"type": "join", "room": ROOM, "id": "j"})
    await ws.next_text(type="joined")
    return ws


async def test_two_users_of_one_name_are_told_apart(keyed: tuple[Any, Any]) -> None:
    node, private = keyed
    await until_ready(node)
    watcher = await _member(node, private, "watcher", "watcher")
    alice = await _member(node, private, "alice", "Alice")
    mallory = await _member(node, private, "mallory", "Alice")
    try:
        await alice.send({"type": "message", "text": "from alice", "id": "a"})
        await alice.next_text(type="ack", id="a")
        await mallory.send({"type": "message", "text": "from mallory", "id": "m"})
        await mallory.next_text(type="ack", id="m")
        real = await watcher.next_text(type="message", text="from alice")
        forged = await watcher.next_text(type="message", text="from mallory")
        author = {k: v for k, v in real.items() if k not in SHOWN_ANYWAY}
        impostor = {k: v for k, v in forged.items() if k not in SHOWN_ANYWAY}
        # Before: both {'type': 'message', 'room': 'namesakes', 'username': 'Alice'}
        assert author != impostor, author
        # Each author's user_id is what its welcome told it (a page marks its own by it), and
        # never the token's sub.
        assert real["user_id"] == alice.welcome["user_id"], real
        assert forged["user_id"] == mallory.welcome["user_id"], forged
        assert "alice" not in real["user_id"] and "mallory" not in forged["user_id"]
    finally:
        for ws in (watcher, alice, mallory):
            await ws.close()
