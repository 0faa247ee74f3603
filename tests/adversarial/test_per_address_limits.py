"""Attack 8: limits are per connection only. One address, over 256 connections, put 5,120
messages into one room in 2.6 s; join/leave churn flooded members with user_joined/user_left.

Defended: limits per room and per user/address exist beside the per-connection ones (cluster-wide
where one node cannot see the abuse), so many connections from one address buy little more than
one: what a member of the room receives from them stays bounded."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from tests.adversarial.bursts import join
from tests.adversarial.bystander import BystanderProbe
from tests.adversarial.rawws import HandshakeRefused, RawWebSocket, text

# 100 connections from one address through nginx, each sending the default burst of 20 at once.
SPAMMERS = 100
SPAM_BURST = 20
WINDOW_S = 3.0
# What one address may put into one room in the window: ~100 messages/s (ten fast typists
# at full speed), 300 in 3 s. Before: 5,120 in 2.6 s.
ROOM_MESSAGES_FROM_ONE_ADDRESS = 300
# Join/leave churn from CHURNERS connections of one address, for WINDOW_S.
CHURNERS = 20
# The notices one address may cause a member to receive: 50/s. Before: ~44/s per connection.
NOTICES_FROM_ONE_ADDRESS = 150
# nginx's documented per-address WebSocket cap (limit_conn): regression guard.
NGINX_CONNECTIONS_PER_ADDRESS = 256


def count(ws: RawWebSocket, kinds: set[str]) -> int:
    return sum(1 for e in ws.received.texts if e.get("type") in kinds)


async def test_many_connections_from_one_address_cannot_flood_a_room(
    cluster: Any, probe: BystanderProbe
) -> None:
    room = f"spam-{uuid.uuid4().hex[:8]}"
    member = await RawWebSocket.connect("127.0.0.1", cluster.nodes[0].port)
    await join(member, room, "member")
    spammers = [
        await RawWebSocket.connect("127.0.0.1", cluster.nginx_port) for _ in range(SPAMMERS)
    ]
    try:
        for ws in spammers:
            await join(ws, room, "spammer")
        with probe.on(cluster.nodes[0]) as bystander:
            started = time.monotonic()
            for ws in spammers:
                ws.send_bytes(
                    b"".join(
                        text({"type": "message", "text": f"spam {i}"}) for i in range(SPAM_BURST)
                    )
                )
            await asyncio.sleep(max(0.0, started + WINDOW_S - time.monotonic()))
        got = count(member, {"message"})
    finally:
        for ws in spammers:
            await ws.close()
        await member.close()
    figures = (
        f"{SPAMMERS} connections x {SPAM_BURST} messages from one address: a member received "
        f"{got} in {WINDOW_S:.0f} s (bound {ROOM_MESSAGES_FROM_ONE_ADDRESS})"
    )
    print(figures, bystander[0].describe())
    assert got <= ROOM_MESSAGES_FROM_ONE_ADDRESS, figures
    BystanderProbe.assert_fast(bystander, "a room flood from one address")


async def test_join_leave_churn_from_one_address_cannot_flood_members(cluster: Any) -> None:
    room = f"churn-{uuid.uuid4().hex[:8]}"
    member = await RawWebSocket.connect("127.0.0.1", cluster.nodes[0].port)
    await join(member, room, "member")
    churners = [
        await RawWebSocket.connect("127.0.0.1", cluster.nginx_port) for _ in range(CHURNERS)
    ]
    deadline = time.monotonic() + WINDOW_S

    async def churn(ws: RawWebSocket) -> None:
        while time.monotonic() < deadline and not ws.received.ended.is_set():
            await ws.send({"type": "join", "room": room, "username": "churner"})
            await ws.send({"type": "leave", "room": room})
            await asyncio.sleep(0.01)

    try:
        await asyncio.gather(*(churn(ws) for ws in churners))
        await asyncio.sleep(0.5)
        got = count(member, {"user_joined", "user_left"})
    finally:
        for ws in churners:
            await ws.close()
        await member.close()
    figures = (
        f"{CHURNERS} churning connections from one address: a member received {got} "
        f"join/leave notices in {WINDOW_S:.0f} s (bound {NOTICES_FROM_ONE_ADDRESS})"
    )
    print(figures)
    assert got <= NOTICES_FROM_ONE_ADDRESS, figures


async def test_nginx_caps_websockets_per_address(cluster: Any) -> None:
    opened: list[RawWebSocket] = []
    refused: list[int] = []
    try:
        for _ in range(NGINX_CONNECTIONS_PER_ADDRESS + 20):
            try:
                opened.append(await RawWebSocket.connect("127.0.0.1", cluster.nginx_port))
            except HandshakeRefused as exc:
                refused.append(exc.status)
    finally:
        for ws in opened:
            await ws.close()
    print(f"{len(opened)} WebSockets open from one address, {len(refused)} refused {set(refused)}")
    assert len(opened) <= NGINX_CONNECTIONS_PER_ADDRESS and set(refused) == {429}
