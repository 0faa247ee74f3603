"""Red team 10: a few users drown everybody else's messages in the room's shared bucket.

A room takes 100 messages a second over all nodes (a burst of 200); a user 20 a second (40 at
once). A few users, each within their own limit on two connections, together send more than
the room takes and keep its bucket empty: another member of the room, sending a message every
half second like a person, had 2-4 of 12 refused `rate_limited` on main with 16 such users
(1-3 of 8 with 10, 2 of 8 with 6). Now a client that spent half its own burst leaves the
room's last quarter (50 tokens) to the others: 0 of 12.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from tests.adversarial.rawws import RawWebSocket, text
from tests.adversarial.readiness import until_ready
from tests.adversarial.room_share import refused_of_a_person, token_member

ROOM = "drowned"
FLOODERS = 16  # users, each within its 20 messages/s over two connections of 10/s
CONNECTIONS_EACH = 2
TICK_S = 0.1  # each connection: one message per tick, its own 10/s
WARM_UP_S = 1.0  # the flooders' bursts drain the room's at once; then 320/s against 100/s
BYSTANDER_MESSAGES = 12
BYSTANDER_EVERY_S = 0.5


async def test_a_few_users_within_their_limits_do_not_refuse_everybody_elses_messages(
    keyed: tuple[Any, Any],
) -> None:
    node, private = keyed
    await until_ready(node)
    flooders = [
        await token_member(node, private, ROOM, f"flooder-{user}")
        for user in range(FLOODERS)
        for _ in range(CONNECTIONS_EACH)
    ]
    bystander = await token_member(node, private, ROOM, "bystander")
    stop = asyncio.Event()

    async def flood(ws: RawWebSocket, phase: float) -> None:
        # Its connection's burst at once (20; 40 a user: 240 drain the room's 200), then 10/s.
        ws.send_bytes(b"".join(text({"type": "message", "text": "burst"}) for _ in range(20)))
        await asyncio.sleep(phase)  # spread over the tick: the room's tokens taken as they come
        for number in itertools.count():
            if stop.is_set():
                return
            ws.send_bytes(text({"type": "message", "text": f"spam {number}"}))
            await asyncio.sleep(TICK_S)

    floods = [
        asyncio.ensure_future(flood(ws, TICK_S * index / len(flooders)))
        for index, ws in enumerate(flooders)
    ]
    try:
        await asyncio.sleep(WARM_UP_S)  # the attack's own duration: the burst is drained
        refused = await refused_of_a_person(bystander, BYSTANDER_MESSAGES, BYSTANDER_EVERY_S)
        shown = sum(t.get("type") == "message" for t in bystander.received.texts)
        print(f"bystander refused {refused} of {BYSTANDER_MESSAGES}; messages shown {shown}")
        # main: 2-4 of 12 refused
        assert refused == 0
    finally:
        stop.set()
        await asyncio.gather(*floods)
        for ws in [*flooders, bystander]:
            await ws.close()
