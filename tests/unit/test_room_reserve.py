"""RateLimiter.allow_keeping: a shared bucket that heavy senders may not empty (red team 10)."""

from __future__ import annotations

from roomcast.core.ratelimit import RateLimiter


def test_a_heavy_sender_stops_at_the_reserve_and_a_light_one_takes_it() -> None:
    room = RateLimiter(0.001, 10)  # refills too slowly to matter here
    heavy = sum(room.allow_keeping(4) for _ in range(20))
    assert heavy == 6  # 10 tokens, 4 left behind
    assert room.strikes == 0  # a shared bucket's refusal is not the sender's flood
    light = sum(room.allow_keeping(0) for _ in range(20))
    assert light == 4


def test_level_says_what_is_there_and_what_is_owed() -> None:
    bucket = RateLimiter(0.001, 40)
    assert bucket.level == 40
    bucket.spend(debt=5, cost=45)
    assert -5.01 < bucket.level < -4.99
