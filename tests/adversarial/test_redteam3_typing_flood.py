"""Red team 3: typing from many connections of one client.

docs/security.md bounds what one client puts into a room over all its connections for messages
(`ROOMCAST_CLIENT_MESSAGE_RATE_*`) and for join/leave notices (`ROOMCAST_CLIENT_JOIN_RATE_*`),
but typing was limited per connection only (2/s, burst 5): 200 connections of one address
through nginx made every member of a room receive 1,600 `typing` events in 3 s (~530/s, each a
frame to every member), where the same connections' messages reach a member at ~20/s.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from tests.adversarial.bursts import join
from tests.adversarial.bystander import BystanderProbe
from tests.adversarial.rawws import RawWebSocket, text

TYPERS = 100  # connections of one address through nginx (it allows 256)
WINDOW_S = 3.0
# A member may see from one client about its typing burst and rate over all nodes (20 + 10/s;
# each of the 3 nodes admits its own burst before the shared level reaches it): 120 in 3 s;
# bounded at 200 (before: 1,000 from 100 connections, 1,600 from 200).
TYPING_FROM_ONE_CLIENT = 200


async def test_typing_from_many_connections_of_one_address_is_bounded(
    cluster: Any, probe: BystanderProbe
) -> None:
    room = f"typing-{uuid.uuid4().hex[:8]}"
    member = await RawWebSocket.connect(
        "127.0.0.1", cluster.nodes[0].port, headers=[("X-Forwarded-For", "198.51.100.7")]
    )
    await join(member, room, "member")
    typers = [await RawWebSocket.connect("127.0.0.1", cluster.nginx_port) for _ in range(TYPERS)]
    try:
        for ws in typers:
            await join(ws, room, "typer")
        seen = len(member.received.texts)
        with probe.on(cluster.nodes[0]) as bystander:
            started = time.monotonic()
            while time.monotonic() < started + WINDOW_S:
                for ws in typers:  # each connection at its own limit: 2/s, after a burst of 5
                    ws.send_bytes(text({"type": "typing"}) * 2)
                await asyncio.sleep(0.5)
        refused = sum(
            1
            for ws in typers
            for event in ws.received.texts
            if event.get("type") == "error" and event.get("code") == "rate_limited"
        )
        got = sum(1 for e in member.received.texts[seen:] if e.get("type") == "typing")
    finally:
        for ws in typers:
            await ws.close()
        await member.close()
    figures = (
        f"{TYPERS} connections of one address typing for {WINDOW_S:.0f} s: a member received "
        f"{got} typing events (bound {TYPING_FROM_ONE_CLIENT}); {refused} refused rate_limited"
    )
    print(figures, bystander[0].describe())
    assert got <= TYPING_FROM_ONE_CLIENT, figures
    assert refused > 0, figures
    BystanderProbe.assert_fast(bystander, "a typing flood from one address")
