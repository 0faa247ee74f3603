"""SharedCharges: a loop turn's admissions become one charge per owner (all its buckets in it),
and the answer brings the node's copy of each bucket down to the shared level."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from roomcast.broker import BucketCharge
from roomcast.core.ratelimit import RateLimiter, SharedCharges

Sent = tuple[str, list[tuple[str, int, float, int, int]]]


async def test_one_charge_per_owner_and_turn_and_the_copy_follows_the_shared_level() -> None:
    sent: list[Sent] = []
    answers: list[Callable[[float], None]] = []

    def send(owner: str, charges: Sequence[BucketCharge]) -> None:
        sent.append((owner, [(c.kind, c.cost, c.rate, c.burst, c.debt) for c in charges]))
        answers.extend(c.on_level for c in charges)

    charges = SharedCharges(asyncio.get_running_loop(), send)
    messages, joins = RateLimiter(1.0, 10), RateLimiter(0.01, 4)
    for _ in range(3):
        assert messages.allow()
        charges.charge("ip:1.2.3.4", "msg", messages)
    charges.charge("ip:1.2.3.4", "join", joins, debt=4)
    assert sent == []  # nothing before the end of the turn
    await asyncio.sleep(0)
    # One command for the owner, both of its buckets in it.
    assert sent == [("ip:1.2.3.4", [("msg", 3, 1.0, 10, 1), ("join", 1, 0.01, 4, 4)])]
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


async def test_owners_are_charged_apart_and_a_later_turn_sends_again() -> None:
    sent: list[Sent] = []

    def send(owner: str, charges: Sequence[BucketCharge]) -> None:
        sent.append((owner, [(c.kind, c.cost, c.rate, c.burst, c.debt) for c in charges]))

    charges = SharedCharges(asyncio.get_running_loop(), send)
    bucket = RateLimiter(1.0, 10)
    charges.charge("sub:ann", "kept", bucket, debt=10, cost=400)
    charges.charge("sub:bob", "msg", bucket)
    charges.charge("sub:ann", "kept", bucket, debt=10, cost=100)
    await asyncio.sleep(0)
    assert sent == [
        ("sub:ann", [("kept", 500, 1.0, 10, 10)]),
        ("sub:bob", [("msg", 1, 1.0, 10, 1)]),
    ]
    charges.charge("sub:ann", "msg", bucket)
    await asyncio.sleep(0)
    assert sent[2:] == [("sub:ann", [("msg", 1, 1.0, 10, 1)])]
