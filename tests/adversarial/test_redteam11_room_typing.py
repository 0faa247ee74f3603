"""Red team 11: typing into one room from many clients.

docs/security.md bounds a room's messages over all its senders (`ROOMCAST_ROOM_MESSAGE_RATE_*`,
100/s after 200: "many clients together cannot drown a room"), but typing only per connection
(2/s, 5) and per client (10/s, 20): every `typing` is a frame to every member, like a message,
and nothing bounded a room's. 100 connections of 50 addresses, each within its own limits, made
a member receive ~1,100 `typing` events in 3 s, where the same clients' messages reach it at
most 500 times (the room's 200 + 100/s).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from tests.adversarial.bursts import join
from tests.adversarial.rawws import RawWebSocket, text

ADDRESSES = 50
CONNECTIONS_PER_ADDRESS = 2
WINDOW_S = 3.0
# docs/security.md: typing per room 20/s after 40, over all nodes; each of the 3 nodes admits
# its own copy's burst before the shared level reaches it: 40 x 3 + 20/s.
ROOM_TYPING_IN_WINDOW = 40 * 3 + 20 * WINDOW_S + 40


async def test_typing_from_many_clients_is_bounded_per_room(cluster: Any) -> None:
    room = f"typing-room-{uuid.uuid4().hex[:8]}"
    member = await RawWebSocket.connect(
        "127.0.0.1", cluster.nodes[0].port, headers=[("X-Forwarded-For", "198.51.100.70")]
    )
    await join(member, room, "member")
    typers = []
    for index in range(ADDRESSES * CONNECTIONS_PER_ADDRESS):
        node = cluster.nodes[index % len(cluster.nodes)]
        address = f"10.11.{index // CONNECTIONS_PER_ADDRESS}.1"  # a node believes loopback's XFF
        ws = await RawWebSocket.connect(
            "127.0.0.1", node.port, headers=[("X-Forwarded-For", address)]
        )
        typers.append(ws)
    try:
        for ws in typers:
            await join(ws, room, "typer")
        seen = len(member.received.texts)
        started = time.monotonic()
        while time.monotonic() < started + WINDOW_S:
            for ws in typers:  # each connection at its own limit: 2/s, after a burst of 5
                ws.send_bytes(text({"type": "typing"}) * 2)
            await asyncio.sleep(0.5)
        await asyncio.sleep(0.5)  # what is on its way
        got = sum(1 for e in member.received.texts[seen:] if e.get("type") == "typing")
        refusals = [
            event
            for ws in typers
            for event in ws.received.texts
            if event.get("type") == "error" and event.get("code") == "rate_limited"
        ]
    finally:
        for ws in typers:
            await ws.close()
        await member.close()
    figures = (
        f"{len(typers)} connections of {ADDRESSES} addresses typing for {WINDOW_S:.0f} s: a "
        f"member received {got} typing events (bound {ROOM_TYPING_IN_WINDOW:.0f}); "
        f"{len(refusals)} refused rate_limited "
        f"({sum(e['reason'].startswith('room ') for e in refusals)} for the room)"
    )
    print(figures)
    assert got <= ROOM_TYPING_IN_WINDOW, figures
    assert any(e["reason"].startswith("room ") for e in refusals), figures  # the room's limit
