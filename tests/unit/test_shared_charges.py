"""SharedCharges: a loop turn's admissions become one charge per bucket, and the answer brings
the node's copy of the bucket down to the shared level."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from roomcast.core.ratelimit import RateLimiter, SharedCharges

Sent = tuple[str, int, float, int, int]


async def test_one_charge_per_bucket_and_turn_and_the_copy_follows_the_shared_level() -> None:
    sent: list[Sent] = []
    answers: list[Callable[[float], None]] = []

    def send(
        name: str, cost: int, rate: float, burst: int, debt: int, on: Callable[[float], None]
    ) -> None:
        sent.append((name, cost, rate, burst, debt))
        answers.append(on)

    charges = SharedCharges(asyncio.get_running_loop(), send)
    messages, joins = RateLimiter(1.0, 10), RateLimiter(0.01, 4)
    for _ in range(3):
        assert messages.allow()
        charges.charge("msg:ip:1.2.3.4", messages)
    charges.charge("join:ip:1.2.3.4", joins, debt=4)
    assert sent == []  # nothing before the end of the turn
    await asyncio.sleep(0)
    assert sent == [("msg:ip:1.2.3.4", 3, 1.0, 10, 1), ("join:ip:1.2.3.4", 1, 0.01, 4, 4)]
    # The other nodes spent the rest: the shared level is -1, so the copy must refill 2 tokens.
    answers[0](-1.0)
    assert not messages.allow()
    # A shared level above the copy's own never raises it.
    answers[1](4.0)
    assert joins.ready()
    joins.spend(4)
    joins.spend(4)
    answers[1](4.0)
    assert joins.ready()  # 2 left
    joins.spend(4)
    joins.spend(4)
    assert not joins.ready()
    # A close spends without debt, and does not forgive one owed already.
    for _ in range(3):
        joins.spend(4)
    joins.spend(0)
    joins.follow(-3.0)
    assert not joins.ready()
