"""Red team 8: join/leave churn by reconnecting, from one address.

docs/security.md bounds join/leave churn per client over all nodes
(`ROOMCAST_CLIENT_JOIN_RATE_*`, 5/s after a burst of 40): "Each leave spends a token ..., a join
needs one to be there ... A close spends nothing: churn by reconnecting is bounded only by each
connection's join bucket and the handshakes". Each new connection has a full join bucket of its
own, and one address may start 100 handshakes a second (400 at once) on every node: opening a
WebSocket through nginx, joining a room and closing it again, over and over, made every member
of the room receive a `user_joined` and a `user_left` per handshake, each a frame to every member
(in a room of N, 2N deliveries for one handshake), with nothing counted against the client.

Defended on the announcing side: a client whose joins and leaves of a room come faster than 10
a second after a burst of 100 has them coalesced into `presence_changed` notices (core/churn.py,
as a big room's; the room's other clients are still named, red team 10): now 100 notices (the
burst). Refusing the churner's joins (a
bucket per client and room that young closes spent: 90) also refused legitimate rejoins of one
address into one room within seconds, as after a fault, and was not merged.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from roomcast.core.churn import CHURN_BURST
from tests.adversarial.bursts import join
from tests.adversarial.devcluster_shim import scaled
from tests.adversarial.rawws import HandshakeRefused, RawWebSocket

# Concurrent reconnect loops of the one attacking address, and how long they run.
LOOPS = 16
WINDOW_S = 3.0
# What one address may make a member receive in the window, as for churn over `leave` frames
# (test_per_address_limits.py): 150 (50/s). Before: 2,948-3,216 (1,474-1,608 cycles in 3 s, none
# refused); now the churn burst, 100.
NOTICES_FROM_ONE_ADDRESS = 150


def notices(ws: RawWebSocket) -> int:
    return sum(1 for e in ws.received.texts if e.get("type") in {"user_joined", "user_left"})


async def settled(ws: RawWebSocket, quiet_s: float, limit_s: float) -> int:
    """The member's notice count once nothing new came for ``quiet_s`` (at most ``limit_s``):
    the last closes' leaves are still on their way when the attacker stops."""
    got = ws.received
    deadline = time.monotonic() + scaled(limit_s)
    while time.monotonic() < deadline:
        before = len(got.texts)
        got.arrived.clear()
        try:
            await asyncio.wait_for(got.arrived.wait(), scaled(quiet_s))
        except TimeoutError:
            break
        if len(got.texts) == before:
            break
    return notices(ws)


async def test_reconnecting_in_and_out_of_a_room_cannot_flood_its_members(cluster: Any) -> None:
    room = f"reconnect-{uuid.uuid4().hex[:8]}"
    member = await RawWebSocket.connect("127.0.0.1", cluster.nodes[0].port)
    await join(member, room, "member")
    deadline = time.monotonic() + WINDOW_S
    outcomes = {"joined": 0, "join_refused": 0, "handshake_refused": 0}

    async def reconnect_loop(loop: int) -> None:
        attempt = 0
        while time.monotonic() < deadline:
            attempt += 1
            try:
                ws = await RawWebSocket.connect("127.0.0.1", cluster.nginx_port)
            except HandshakeRefused:
                outcomes["handshake_refused"] += 1
                await asyncio.sleep(0.05)
                continue
            try:
                key = f"j{loop}-{attempt}"
                await ws.send({"type": "join", "room": room, "username": "churner", "id": key})
                answer = await ws.next_text(id=key)
                outcomes["joined" if answer["type"] == "joined" else "join_refused"] += 1
            finally:
                await ws.close()

    try:
        await asyncio.gather(*(reconnect_loop(loop) for loop in range(LOOPS)))
        got = await settled(member, quiet_s=0.5, limit_s=10)
    finally:
        await member.close()
    figures = (
        f"{LOOPS} reconnect loops of one address for {WINDOW_S:.0f} s ({outcomes}): a member "
        f"received {got} join/leave notices (bound {NOTICES_FROM_ONE_ADDRESS})"
    )
    print(figures)
    assert member.received.close_code in (None, 1000), figures
    assert got <= NOTICES_FROM_ONE_ADDRESS, figures
    # The attack ran: its handshakes were admitted and the first joins (the burst) passed.
    assert outcomes["joined"] >= 20, figures
    if 2 * outcomes["joined"] > CHURN_BURST:
        # Past the burst the member was told what it no longer gets name by name.
        told = [e for e in member.received.texts if e.get("type") == "presence_changed"]
        assert told and told[0]["big"] is True, figures
