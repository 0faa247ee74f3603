"""Bearer-token checks per address over the HTTP API: a forged signature costs tenfold."""

from __future__ import annotations

import pytest

from roomcast.core import ratelimit
from roomcast.core.address_admission import FORGED_TOKEN_COST
from roomcast.core.address_admission import AddressAdmission as TokenCheckAdmission


class MonotonicClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_forged_checks_get_a_tenth_of_the_rate_valid_ones_all_of_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = MonotonicClock()
    monkeypatch.setattr(ratelimit, "time", clock)
    checks = TokenCheckAdmission(rate=100.0, burst=400)
    valid = sum(checks.admit("192.0.2.1") is None for _ in range(500))
    assert valid == 400
    forged = 0
    for _ in range(500):
        if checks.admit("192.0.2.2") is None:
            checks.forged("192.0.2.2")
            forged += 1
    assert forged == 400 // FORGED_TOKEN_COST
    assert checks.admit("192.0.2.2") == 1  # Retry-After: the next token within 1/rate
