"""Admission per client address: a token bucket each, with a retry hint, and a tenfold cost for
a token whose signature failed. No I/O.

Used twice, with the same per-address rate and burst (ROOMCAST_ADMISSION_PER_ADDRESS_*):
- new WebSocket handshakes (net/admission.py): one address that floods handshakes is refused
  (429) on its own, before it takes the node's tokens, so the other clients are not told to wait
  behind it;
- bearer-token checks over the HTTP API: checking a signature (ES256: ~0.3 ms of CPU) comes
  before the caller is known, so the API rate, which is the caller's, never applied to it (16
  keep-alive connections of one address with a forged token had 4,602 signatures checked in
  3 s, node CPU 2.9 s of the 3, a bystander's p50 53 ms).

Checking a signature is most of a handshake's CPU, and only a forger sends bad ones over and
over: a failed one costs FORGED_TOKEN_COST, so a forger's burst and rate shrink tenfold (one
address's 400 + 100/s held a bystander at 390 ms p99) while an office's valid reconnects,
behind the same address, are unchanged.
"""

from __future__ import annotations

import math
from typing import Final

from roomcast.core.ratelimit import BucketPool

# What a refused client is told, at least: Retry-After counts whole seconds (RFC 9110 §10.2.3).
MIN_RETRY_AFTER: Final = 1
# Tokens a check whose signature failed costs in all.
FORGED_TOKEN_COST: Final = 10


class AddressAdmission:
    """One bucket per address. A bucket lives while its address keeps coming and for one refill
    time after (:class:`~roomcast.core.ratelimit.BucketPool`): what the node keeps is bounded by
    the addresses seen in the last ``burst / rate`` seconds."""

    __slots__ = ("_pool", "_retry_after")

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"need rate > 0 and burst >= 1; got {rate}, {burst}")
        self._pool = BucketPool(rate, burst)
        # The next token comes within 1/rate: say so, in whole seconds.
        self._retry_after = max(MIN_RETRY_AFTER, math.ceil(1 / rate))

    def admit(self, address: str) -> int | None:
        """None: go ahead (a token was taken). Otherwise the seconds to put in Retry-After."""
        bucket = self._pool.acquire(address)
        self._pool.release(address)
        return None if bucket.allow() else self._retry_after

    def forged(self, address: str) -> None:
        """What was admitted for ``address`` carried a token whose signature failed: it costs
        FORGED_TOKEN_COST tokens in all, owing at most that many (without a debt, an empty
        bucket's next token paid for a whole forged check: the rate was not cut)."""
        bucket = self._pool.acquire(address)
        bucket.spend(FORGED_TOKEN_COST, FORGED_TOKEN_COST - 1)
        self._pool.release(address)

    def __len__(self) -> int:
        return len(self._pool)
