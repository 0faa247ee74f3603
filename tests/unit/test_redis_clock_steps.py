"""A clock that steps (NTP correcting a drifted host, a VM restored or migrated, an operator's
``date -s``) must not leave a node's estimate of Redis's clock wrong: every publish script
carries a deadline from it, and one wrong by more than the Redis timeout has Redis refuse every
message (``late``, answered ``unavailable``) or lets a held script run after the node looked
for it and answered ``unavailable``."""

from __future__ import annotations

from roomcast.broker.deadline import RedisClock

TIMEOUT_MS = 1000.0
REDIS_AHEAD_MS = 100.0  # Redis's clock minus the node's, before any step


def time_reply(redis_ms: float) -> list[int]:
    return [int(redis_ms // 1000), int(redis_ms % 1000 * 1000)]


def sampled(
    clock: RedisClock, local_ms: float, round_trip_ms: float, redis_ahead_ms: float
) -> None:
    """A TIME sent at ``local_ms`` and answered ``round_trip_ms`` later."""
    midpoint = local_ms + round_trip_ms / 2
    clock.sample(local_ms, local_ms + round_trip_ms, time_reply(midpoint + redis_ahead_ms))


def settled_clock() -> RedisClock:
    clock = RedisClock()
    sampled(clock, 1_000_000.0, 0.1, REDIS_AHEAD_MS)  # a tight round trip, held
    return clock


def test_node_clock_stepped_back_is_followed_at_the_next_sample() -> None:
    clock = settled_clock()
    step_ms = 60_000.0
    # Half a timeout later the node's wall clock reads a minute less; the round trip is a bit
    # wider than the held sample's (as most are).
    local_ms = 1_000_500.0 - step_ms
    sampled(clock, local_ms, 0.3, REDIS_AHEAD_MS + step_ms)
    redis_now = 1_000_500.0 + REDIS_AHEAD_MS
    # A message sent now must be allowed to run for the timeout in Redis's clock (before:
    # its deadline was a minute in Redis's past, so every message was refused for a minute).
    assert abs(clock.deadline(local_ms, TIMEOUT_MS) - (redis_now + TIMEOUT_MS)) < 5


def test_redis_clock_stepped_is_followed_at_the_next_sample() -> None:
    clock = settled_clock()
    step_ms = -5_000.0  # Redis's host corrected its clock back by five seconds
    local_ms = 1_000_500.0
    sampled(clock, local_ms, 0.3, REDIS_AHEAD_MS + step_ms)
    redis_now = local_ms + REDIS_AHEAD_MS + step_ms
    # Before: the deadline stayed five seconds late in Redis's clock, so a held script could run
    # long after the node looked it up, found nothing and answered ``unavailable``.
    assert abs(clock.deadline(local_ms, TIMEOUT_MS) - (redis_now + TIMEOUT_MS)) < 5


def test_a_wider_round_trip_without_a_step_keeps_the_tighter_estimate() -> None:
    clock = settled_clock()
    held_offset = clock.offset_ms
    sampled(clock, 1_000_500.0, 3.0, REDIS_AHEAD_MS + 1.2)  # consistent within its error
    assert clock.offset_ms == held_offset
