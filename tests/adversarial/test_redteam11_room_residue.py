"""Red team 11: what a room that held one message leaves in Redis, and for how long.

A room's history lives `ROOMCAST_HISTORY_TTL` (600 s), but the first message also makes its
offset counter, epoch and fence line, which live a day (`meta_ttl`, 86,400 s) so that offsets
never repeat. An HTTP API post needs no join, so one client may make a fresh room with every
message: within its message limit (20/s over all nodes) that is ~1.7 million rooms a day, each
leaving its day-long keys. Under `volatile-ttl` those are evicted last, after every room's
history (600 s). On main, one address through nginx made 24 rooms/s, ~558 MiB at once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from tests.adversarial.httpraw import http
from tests.adversarial.observe import MIB, redis_command

HISTORY_TTL_S = 600
# The client's bursts are spent first (its 40 messages on main; its history-write bytes now,
# which a room's first message spends too); the sustained rate is measured after them.
BURST_PHASE_MAX_S = 30.0
# Long enough that one room more or less in the window moves the rate little: the client earns
# a room every ~1.4 s, so a 5 s window held 3 to 5 of them (0.6 to 1.0 rooms/s: 20 to 32 MiB,
# the last a hair over the bound) as the window fell against the refills.
SUSTAINED_PHASE_S = 10.0
CONCURRENT_POSTS = 4
# What one client may leave in Redis beyond the history ttl: the 32 MiB test_redis_memory.py
# allows one address over a burst.
RESIDUE_PER_CLIENT_MIB = 32


async def _post(port: int, room: str) -> str | None:
    """None if accepted, else the refusal's reason."""
    body = {"text": "hi", "username": "residue"}
    answer = await http(port, "POST", f"/api/rooms/{room}/messages", json_body=body)
    assert answer.status in (201, 429), (answer.status, answer.body[:200])
    return None if answer.status == 201 else str(answer.json().get("reason"))


async def _spend_bursts(port: int, prefix: str) -> None:
    """Posts until one is refused for the bytes it keeps in history (or the phase's end)."""
    deadline = time.monotonic() + BURST_PHASE_MAX_S
    serial = 0
    while time.monotonic() < deadline:
        rooms = [f"{prefix}-b{serial + k}" for k in range(CONCURRENT_POSTS)]
        serial += CONCURRENT_POSTS
        refusals = await asyncio.gather(*(_post(port, room) for room in rooms))
        if any(r is not None and "history" in r for r in refusals):
            return
        await asyncio.sleep(0.02)


def _lasting_keys(port: int, room: str) -> tuple[int, int]:
    """(bytes, longest ttl in s) of the room's keys that outlive its history."""
    size = longest = 0
    for key in redis_command(port, "KEYS", f"rc:{{{room}}}:*"):
        ttl = int(redis_command(port, "TTL", key))
        if ttl == -1 or ttl > HISTORY_TTL_S:
            size += int(redis_command(port, "MEMORY", "USAGE", key))
            longest = max(longest, 86_400 * 365 if ttl == -1 else ttl)
    return size, longest


async def test_fresh_rooms_of_one_client_leave_a_bounded_residue(cluster: Any) -> None:
    port = cluster.nginx_port
    prefix = f"res-{uuid.uuid4().hex[:6]}"
    await _spend_bursts(port, prefix)
    accepted, serial = [], 0
    deadline = time.monotonic() + SUSTAINED_PHASE_S
    while time.monotonic() < deadline:
        rooms = [f"{prefix}-s{serial + k}" for k in range(CONCURRENT_POSTS)]
        serial += CONCURRENT_POSTS
        results = await asyncio.gather(*(_post(port, room) for room in rooms))
        accepted += [room for room, no in zip(rooms, results, strict=True) if no is None]
        await asyncio.sleep(0.02)
    rate = len(accepted) / SUSTAINED_PHASE_S
    sample = [_lasting_keys(cluster.redis_port, room) for room in accepted[:20]]
    per_room = sum(size for size, _ in sample) / len(sample)
    lasting = max(ttl for _, ttl in sample)
    residue = rate * lasting * per_room / MIB
    figures = (
        f"one address posting to fresh rooms through nginx: {rate:.1f} rooms/s sustained, each "
        f"leaving {per_room:.0f} B of keys for {lasting} s: {residue:,.0f} MiB at once "
        f"(bound {RESIDUE_PER_CLIENT_MIB})"
    )
    print(figures)
    assert residue <= RESIDUE_PER_CLIENT_MIB, figures
