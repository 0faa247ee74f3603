"""Red team 11: the history one client makes Redis keep, over time.

docs/security.md bounded what a client's messages keep in Redis by rooms: 2 MiB of history per
room, 16 rooms per connection, "at most 16 x 2 MiB = 32 MiB of history per connection"
(`test_redis_memory.py` holds one address to 32 MiB, over a burst). Nothing bounded it over
time: an HTTP API post needs no join, so each message can go to a room of its own, kept for
`ROOMCAST_HISTORY_TTL` (600 s). One address through nginx, within its message limits (40 + 20/s
over all nodes), posting 60 KB messages to fresh rooms: Redis +51 MiB in 30 s on main, growing
1.6 MiB/s, ~960 MiB within one history ttl (five times the shipped Redis's 192 MB `maxmemory`,
whose `volatile-ttl` then evicts everybody's histories and epochs).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from tests.adversarial.bursts import join
from tests.adversarial.httpraw import http
from tests.adversarial.observe import MIB, redis_info
from tests.adversarial.rawws import RawWebSocket

# How long rooms keep their history by default (ROOMCAST_HISTORY_TTL): what one client wrote
# within it is what Redis holds for it.
HISTORY_TTL_S = 600
MESSAGE_CHARS = 60_000
# Long enough to spend any burst the client has (its 40 messages on main; 12 MiB now).
BURST_PHASE_S = 10.0
# The sustained rate is measured over this window after the burst.
SUSTAINED_PHASE_S = 8.0
CONCURRENT_POSTS = 5
# docs/security.md: a client's written history costs each message its text + 1 KiB, 12 MiB at
# once and 32 KiB/s after (~31 MiB per history ttl); each node may admit what comes within one
# Redis round trip before the shared level reaches it.
KEPT_PER_CLIENT_MIB = 40


async def _post_fresh_rooms(port: int, seconds: float) -> tuple[int, int]:
    """Posts to rooms of their own for ``seconds``: (bytes accepted, posts refused)."""
    text = "x" * MESSAGE_CHARS
    accepted = refused = 0

    async def one() -> None:
        nonlocal accepted, refused
        room = f"kept-{uuid.uuid4().hex[:12]}"
        body = {"text": text, "username": "keeper"}
        answer = await http(port, "POST", f"/api/rooms/{room}/messages", json_body=body)
        if answer.status == 201:
            accepted += MESSAGE_CHARS
        else:
            assert answer.status == 429, (answer.status, answer.body[:200])
            refused += 1

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.gather(*(one() for _ in range(CONCURRENT_POSTS)))
        await asyncio.sleep(0.05)
    return accepted, refused


async def test_one_client_keeps_a_bounded_history_over_fresh_rooms(cluster: Any) -> None:
    before = redis_info(cluster.redis_port, "used_memory")
    burst, _ = await _post_fresh_rooms(cluster.nginx_port, BURST_PHASE_S)
    sustained, refused = await _post_fresh_rooms(cluster.nginx_port, SUSTAINED_PHASE_S)
    growth = (redis_info(cluster.redis_port, "used_memory") - before) / MIB
    rate = sustained / SUSTAINED_PHASE_S
    kept = (burst + rate * HISTORY_TTL_S) / MIB
    figures = (
        f"one address posting {MESSAGE_CHARS // 1000} KB messages to fresh rooms through nginx: "
        f"{burst / MIB:.1f} MiB accepted in {BURST_PHASE_S:.0f} s, then {rate / 1024:.0f} KiB/s "
        f"({refused} refused); Redis {growth:+.1f} MiB; kept within one history ttl "
        f"({HISTORY_TTL_S} s): {kept:.0f} MiB (bound {KEPT_PER_CLIENT_MIB})"
    )
    print(figures)
    assert kept <= KEPT_PER_CLIENT_MIB, figures
    # The same client's WebSocket (same address, through nginx) writes to the same budget.
    ws = await RawWebSocket.connect("127.0.0.1", cluster.nginx_port)
    try:
        room = f"kept-ws-{uuid.uuid4().hex[:8]}"
        await join(ws, room, "keeper")
        # Three at once: the budget may have refilled one since the last post.
        for index in range(3):
            message = {"type": "message", "room": room, "text": "x" * MESSAGE_CHARS}
            await ws.send({**message, "id": f"w{index}"})
        answers = [await ws.next_text(id=f"w{index}") for index in range(3)]
    finally:
        await ws.close()
    refusals = [a for a in answers if a["type"] == "error"]
    assert refusals, answers
    assert all(a["code"] == "rate_limited" and "history" in a["reason"] for a in refusals), answers
