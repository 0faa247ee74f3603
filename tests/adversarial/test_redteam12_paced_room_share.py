"""Red team 12: red team 10's room share again, by users that never look heavy.

A room takes 100 messages a second over all nodes (200 at once) and keeps its last quarter (50)
from clients that spent half their own burst (20 of 40): heavy senders. A user that spends just
under half its burst at once and then sends just under its own rate (20/s) never is: its bucket
stays above half. Twelve such users take the room's burst at once and 234 a second after, and
another member sending a message every half second, like a person, had 2-3 of 12 refused on
main's code (1 of 12 with eight users). Now a client sending faster than a quarter of its rate
past half its burst is heavy too: 0 of 12.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.adversarial.rawws import RawWebSocket, text
from tests.adversarial.readiness import until_ready
from tests.adversarial.room_share import refused_of_a_person, token_member

ROOM = "paced"
USERS = 12
CONNECTIONS_EACH = 2  # each connection 9.75/s, within its own 10/s
AT_ONCE = 19  # a user's: under half its burst of 40
RATE = 19.5  # a user's, under its 20/s: its bucket stays above half
WARM_UP_S = 1.0
BYSTANDER_MESSAGES = 12
BYSTANDER_EVERY_S = 0.5


async def _paced(conns: list[RawWebSocket], stop: asyncio.Event) -> None:
    for index in range(AT_ONCE):
        conns[index % len(conns)].send_bytes(text({"type": "message", "text": "at once"}))
    started, sent = time.monotonic(), 0
    while not stop.is_set():
        due = int((time.monotonic() - started) * RATE)
        while sent < due:
            conns[sent % len(conns)].send_bytes(text({"type": "message", "text": "paced"}))
            sent += 1
        await asyncio.sleep(0.01)


async def test_users_that_never_look_heavy_do_not_refuse_everybody_elses_messages(
    keyed: tuple[Any, Any],
) -> None:
    node, private = keyed
    await until_ready(node)
    users = [
        [await token_member(node, private, ROOM, f"paced-{user}") for _ in range(CONNECTIONS_EACH)]
        for user in range(USERS)
    ]
    bystander = await token_member(node, private, ROOM, "bystander-paced")
    stop = asyncio.Event()
    floods = [asyncio.ensure_future(_paced(conns, stop)) for conns in users]
    refused = 0
    try:
        await asyncio.sleep(WARM_UP_S)
        refused = await refused_of_a_person(bystander, BYSTANDER_MESSAGES, BYSTANDER_EVERY_S)
    finally:
        stop.set()
        await asyncio.gather(*floods)
        for ws in [*(ws for conns in users for ws in conns), bystander]:
            await ws.close()
    own_refusals = sum(
        1
        for conns in users
        for ws in conns
        for e in ws.received.texts
        if e.get("type") == "error" and "your connections" in str(e.get("reason"))
    )
    figures = (
        f"{USERS} users at {AT_ONCE} at once then {RATE}/s: the bystander had {refused} of "
        f"{BYSTANDER_MESSAGES} refused; the users' own limits refused them {own_refusals} times"
    )
    print(figures)
    assert refused == 0, figures
