"""Admission of new WebSocket handshakes, per client address and node-wide: token buckets
with a retry hint. No I/O. The node-wide bucket also admits event streams (core.api_service):
a stream's open costs about what a setup does.

When a node dies, all its clients come back at once to the others. A node that set up every one
of them as fast as they arrive would spend whole seconds of CPU on handshakes and joins while
the members it already holds wait for their messages. Above ``rate`` new handshakes a second
(after a burst of ``burst``) the node answers ``503 Service Unavailable`` with ``Retry-After``
before the upgrade: a refusal costs a parsed request and a short response, not an upgrade, a
token check and a join; nginx (``proxy_next_upstream http_503``) tries the next node first.

``Retry-After`` is a place in a virtual queue, not a constant: each refusal is told to come back
when the tokens owed to every client refused before it have been made (at ``rate``), rounded up
to whole seconds and at most ``max_retry_after``. Ten thousand clients refused at one instant are
told 1, 2, ... 10 s at 1,000/s instead of all coming back together after the same second; the
clients add their own full jitter on top (``roomcast.client.backoff``).
"""

from __future__ import annotations

__all__ = [
    "FORGED_TOKEN_COST",
    "MIN_RETRY_AFTER",
    "AddressAdmission",
    "Admission",
    "address_busy_response",
]

import math
import time
from collections.abc import Callable

from websockets.http11 import Response
from websockets.server import ServerProtocol

from roomcast.core.address_admission import FORGED_TOKEN_COST, MIN_RETRY_AFTER, AddressAdmission
from roomcast.runtime.config import Settings


class Admission:
    """Take a token per new handshake; when there is none, say how long to wait."""

    __slots__ = ("_burst", "_clock", "_max_retry", "_queue_end", "_rate", "_stamp", "_tokens")

    def __init__(
        self,
        rate: float,
        burst: int,
        max_retry_after: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1 or max_retry_after < MIN_RETRY_AFTER:
            raise ValueError(
                f"need rate > 0, burst >= 1, max_retry_after >= {MIN_RETRY_AFTER}; got "
                f"{rate}, {burst}, {max_retry_after}"
            )
        self._rate = rate
        self._burst = float(burst)
        self._max_retry = max_retry_after
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()
        # When the last client refused so far gets its turn (see the module docstring).
        self._queue_end = self._stamp

    @classmethod
    def from_settings(cls, settings: Settings) -> Admission:
        """The node's (``ROOMCAST_ADMISSION_RATE_PER_SECOND``, ``_BURST``, ``_MAX_RETRY_AFTER``)."""
        return cls(
            settings.admission_rate_per_second,
            settings.admission_burst,
            settings.admission_max_retry_after,
        )

    def admit(self) -> int | None:
        """None: go ahead (a token was taken). Otherwise the seconds to put in Retry-After."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return None
        # The next token comes after (1 - tokens) / rate; everyone refused before is ahead.
        first_token = now + (1 - self._tokens) / self._rate
        self._queue_end = min(max(self._queue_end, first_token) + 1 / self._rate,
                              now + self._max_retry)  # fmt: skip
        wait = math.ceil(self._queue_end - now)
        return int(min(self._max_retry, max(MIN_RETRY_AFTER, wait)))

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> int:
        return int(self._burst)


def address_busy_response(proto: ServerProtocol, retry_after: int) -> Response:
    """One address over its handshake rate: 429 with Retry-After, before any upgrade."""
    response = proto.reject(
        429, f"too many new connections from your address; retry after {retry_after} s\n"
    )
    response.headers["Retry-After"] = str(retry_after)
    return response


def busy_response(proto: ServerProtocol, retry_after: int) -> Response:
    """The refusal: 503 with Retry-After, before any upgrade (the connection then closes)."""
    response = proto.reject(
        503, f"node busy: too many new connections; retry after {retry_after} s\n"
    )
    response.headers["Retry-After"] = str(retry_after)
    return response
