"""Attack 5: forged client addresses are believed. A client sends its own X-Forwarded-For through
nginx; the node takes the right-most untrusted hop, which is the forgery, because nginx (the
trusted peer) appended the real one after it.

Defended: only the proxy's own hop is believed, so a forged header changes nothing: the open-mode
API rate limit counts the attacker as the address nginx saw, whatever it writes."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from tests.adversarial.httpraw import http

REQUESTS = 200
CONCURRENCY = 10
# Each bucket must refill between the two rounds: burst 40 at 20/s is 2 s; one more for margin.
REFILL_S = 3.0
# Forged addresses may buy at most this many extra acceptances over honest requests (timing).
FORGERY_GAIN = 10


async def post_many(port: int, room: str, forged: bool) -> int:
    accepted = 0
    serial = iter(range(REQUESTS))

    async def worker() -> None:
        nonlocal accepted
        for index in serial:
            headers = (
                [("X-Forwarded-For", f"198.51.{index // 250}.{index % 250 + 1}")] if forged else []
            )
            answer = await http(
                port, "POST", f"/api/rooms/{room}/messages", headers=headers,
                json_body={"text": f"m{index}", "username": "flooder"},
            )  # fmt: skip
            accepted += answer.status == 201

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return accepted


async def test_forged_forwarded_for_buys_no_extra_requests(cluster: Any) -> None:
    room = f"xff-{uuid.uuid4().hex[:8]}"
    honest = await post_many(cluster.nginx_port, room, forged=False)
    await asyncio.sleep(REFILL_S)
    started = time.monotonic()
    forged = await post_many(cluster.nginx_port, room, forged=True)
    figures = (
        f"{REQUESTS} API posts through nginx: {honest} accepted honestly, {forged} with a forged "
        f"X-Forwarded-For each ({time.monotonic() - started:.1f} s)"
    )
    print(figures)
    assert honest < REQUESTS, f"no rate limit at all: {figures}"
    assert forged <= honest + FORGERY_GAIN, figures
