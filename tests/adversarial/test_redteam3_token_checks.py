"""Red team 3: token signature checks after the handshake, at the frame rate.

A `refresh` frame and a join's `room_token` are each checked like a handshake's token: with an
ES256 public key that is ~0.3 ms of node CPU on this machine, about fifteen times what handling
an ordinary frame costs, yet only the frame rate (50/s per connection) bounded them. One user's
64 connections sending valid refreshes at that rate saturated the node (3.15 s of CPU in 4.5 s)
and held a bystander's round trip at 5.4 s (p50) and 10.3 s (p99); the same with forged room
tokens (refused, but checked first): 316 ms (p99).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.adversarial.bystander import BystanderProbe
from tests.adversarial.observe import Bystander, cpu_seconds
from tests.adversarial.rawws import RawWebSocket, text
from tests.adversarial.readiness import until_ready
from tests.adversarial.tokens import es256

CONNECTIONS = 64  # one user's
WINDOW_S = 3.0
PER_TICK, TICK_S = 5, 0.1  # 50 frames/s per connection: the frame rate
# Checks one user may cause on a node in the window: a burst of 64 and 10/s, ~94. Before: 840
# refreshes answered (of 12,160 sent; the node could not keep up).
CHECKS_FROM_ONE_USER = 120


@pytest.mark.parametrize("kind", ["refresh", "forged room token"])
async def test_token_checks_of_one_user_are_bounded_and_spare_the_bystander(
    keyed: tuple[Any, Any], kind: str
) -> None:
    node, private = keyed
    await until_ready(node)
    token = es256(private, sub="mallory", name="mallory")
    if kind == "refresh":
        frame = text({"type": "refresh", "token": token})
    else:
        granted = es256(private, sub="mallory", room="dm:alice:mallory")
        forged = granted[:-4] + ("AAAA" if not granted.endswith("AAAA") else "BBBB")
        frame = text({"type": "join", "room": "dm:alice:mallory", "room_token": forged})
    connections = [
        await RawWebSocket.connect("127.0.0.1", node.port, path=f"/chat?token={token}")
        for _ in range(CONNECTIONS)
    ]
    bystander = Bystander(
        node.url + "?token=" + es256(private, sub="bystander", name="bystander"), "by"
    )
    try:
        cpu_before = cpu_seconds(node.process.pid)
        started = time.monotonic()
        while time.monotonic() < started + WINDOW_S:
            for ws in connections:
                ws.send_bytes(frame * PER_TICK)
            await asyncio.sleep(TICK_S)
        measured = [bystander.finish()]
        cpu = cpu_seconds(node.process.pid) - cpu_before
    finally:
        bystander.kill()
        for ws in connections:
            await ws.close()
    checked = sum(
        1
        for ws in connections
        for event in ws.received.texts
        if event.get("type") == "refreshed" or event.get("code") == "invalid_room_token"
    )
    figures = (
        f"{kind} from {CONNECTIONS} connections of one user for {WINDOW_S:.0f} s: {checked} "
        f"tokens checked (bound {CHECKS_FROM_ONE_USER}), node CPU {cpu:.2f} s"
    )
    print(figures, measured[0].describe())
    assert 0 < checked <= CHECKS_FROM_ONE_USER, figures
    BystanderProbe.assert_fast(measured, f"{kind} floods from one user")
