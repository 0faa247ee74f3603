"""A room's message bucket shared by heavy senders and a member writing like a person: the
members they are and what that member was refused (red teams 10 and 12)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.adversarial.rawws import RawWebSocket
from tests.adversarial.tokens import es256


async def token_member(node: Any, private: Any, room: str, sub: str) -> RawWebSocket:
    """A user of its own (a token's ``sub``) joined to ``room``."""
    token = es256(private, sub=sub, name=sub)
    ws = await RawWebSocket.connect("127.0.0.1", node.port, path=f"/chat?token={token}")
    await ws.send({"type": "join", "room": room, "id": "j"})
    await ws.next_text(type="joined")
    return ws


async def refused_of_a_person(ws: RawWebSocket, messages: int, every_s: float) -> int:
    """``messages`` sent one every ``every_s`` seconds, each awaited: how many were refused
    (``rate_limited``; anything else but an ack fails the test)."""
    refused = 0
    for number in range(messages):
        ask = f"b{number}"
        started = time.monotonic()
        await ws.send({"type": "message", "text": "hello", "id": ask})
        answer = await ws.next_text(id=ask)
        if answer["type"] == "error":
            assert answer["code"] == "rate_limited", answer
            refused += 1
        else:
            assert answer["type"] == "ack", answer
        await asyncio.sleep(max(0.0, every_s - (time.monotonic() - started)))
    return refused
