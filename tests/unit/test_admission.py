"""Handshake admission, node-wide and per address, and its Retry-After hint (net/admission.py)."""

from __future__ import annotations

import pytest
from websockets.server import ServerProtocol

from roomcast.client.backoff import MAX_RETRY_AFTER, retry_after_seconds
from roomcast.core import ratelimit
from roomcast.net.admission import (
    FORGED_TOKEN_COST,
    AddressAdmission,
    Admission,
    address_busy_response,
    busy_response,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_burst_goes_through_then_the_rate() -> None:
    clock = Clock()
    gate = Admission(rate=10.0, burst=5, max_retry_after=30, clock=clock)
    assert [gate.admit() for _ in range(5)] == [None] * 5
    assert gate.admit() == 1
    clock.now += 0.11  # one token made
    assert gate.admit() is None
    assert gate.admit() is not None
    clock.now += 60  # refilled, never above the burst
    assert [gate.admit() for _ in range(6)] == [None] * 5 + [1]


def test_refused_clients_are_told_later_and_later_turns() -> None:
    """A queue position, not one constant: 3,000 refused at once at 1,000/s are spread over
    the next three seconds instead of all coming back after the same one."""
    clock = Clock()
    gate = Admission(rate=1000.0, burst=1, max_retry_after=30, clock=clock)
    assert gate.admit() is None
    hints = [gate.admit() for _ in range(3000)]
    assert all(h is not None for h in hints)
    assert hints[0] == 1 and hints[997] == 1
    assert hints[1500] == 2 and hints[2500] == 3
    assert hints == sorted(hints)  # type: ignore[type-var]


def test_the_hint_is_capped_and_the_queue_does_not_grow_past_it() -> None:
    clock = Clock()
    gate = Admission(rate=1.0, burst=1, max_retry_after=5, clock=clock)
    gate.admit()
    hints = [gate.admit() for _ in range(1000)]
    assert max(h for h in hints if h is not None) == 5
    # After the cap's worth of time, the queue it promised is over: tokens again.
    clock.now += 6
    assert gate.admit() is None


def test_the_queue_drains_with_time() -> None:
    clock = Clock()
    gate = Admission(rate=100.0, burst=1, max_retry_after=30, clock=clock)
    gate.admit()
    for _ in range(500):
        gate.admit()
    clock.now += 5.5  # the 500 promised turns are over, and the bucket refilled meanwhile
    assert gate.admit() is None
    assert gate.admit() == 1


@pytest.mark.parametrize(("rate", "burst", "cap"), [(0.0, 1, 1.0), (1.0, 0, 1.0), (1.0, 1, 0.5)])
def test_bad_settings_are_refused(rate: float, burst: int, cap: float) -> None:
    with pytest.raises(ValueError):
        Admission(rate, burst, cap)


def test_the_refusal_is_a_503_with_retry_after() -> None:
    response = busy_response(ServerProtocol(), 7)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "7"
    assert b"retry after 7 s" in response.body


class MonotonicClock:
    """Stands in for the time module in roomcast.core.ratelimit."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_each_address_has_its_own_burst_and_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = MonotonicClock()
    monkeypatch.setattr(ratelimit, "time", clock)
    admission = AddressAdmission(rate=2.0, burst=3)
    assert [admission.admit("10.0.0.1") for _ in range(4)] == [None, None, None, 1]
    assert admission.admit("10.0.0.2") is None  # another address: its own burst
    clock.now += 0.5  # one token for 10.0.0.1
    assert admission.admit("10.0.0.1") is None
    assert admission.admit("10.0.0.1") == 1


def test_a_forged_token_costs_its_address_tenfold(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = MonotonicClock()
    monkeypatch.setattr(ratelimit, "time", clock)
    admission = AddressAdmission(rate=10.0, burst=2 * FORGED_TOKEN_COST)
    admitted = 0
    while admission.admit("10.0.0.1") is None:
        admission.forged("10.0.0.1")
        admitted += 1
    assert admitted == 2  # the burst over the cost of a forged handshake
    assert admission.admit("10.0.0.2") is None  # another address: untouched
    # Then one forged handshake per FORGED_TOKEN_COST / rate, not one per token.
    admitted = 0
    for _ in range(100):
        clock.now += 0.01
        if admission.admit("10.0.0.1") is None:
            admission.forged("10.0.0.1")
            admitted += 1
    assert admitted == 1  # 1 s at 10/s
    # The debt is at most one forged check's: an honest client's turn comes within 1 s.
    clock.now += 1.0
    assert admission.admit("10.0.0.1") is None


def test_an_address_that_went_quiet_is_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = MonotonicClock()
    monkeypatch.setattr(ratelimit, "time", clock)
    admission = AddressAdmission(rate=10.0, burst=5)
    for index in range(100):
        admission.admit(f"10.0.{index}.1")
    assert len(admission) == 100
    clock.now += 0.6  # past the refill time (burst / rate): nothing owed, nothing kept
    admission.admit("10.1.0.1")
    assert len(admission) == 1


def test_a_slow_rate_says_when_its_next_token_comes() -> None:
    assert AddressAdmission(rate=0.2, burst=1).admit("a") is None
    assert AddressAdmission(rate=0.2, burst=1)._retry_after == 5


def test_the_address_refusal_is_a_429_with_retry_after() -> None:
    response = address_busy_response(ServerProtocol(), 2)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2"


@pytest.mark.parametrize(
    ("header", "seconds"),
    [(None, 0.0), ("3", 3.0), (" 12 ", 12.0), ("-1", 0.0), ("1.5", 0.0),
     ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0), ("99999999", MAX_RETRY_AFTER)],
)  # fmt: skip
def test_the_client_reads_retry_after(header: str | None, seconds: float) -> None:
    assert retry_after_seconds(header) == seconds
