"""Join/leave churn of one room, told apart by the client that causes it. No I/O.

A client that reconnects into a room over and over (open, join, close, again: only its handshakes
bound it, a close spends no join token) made each cycle two frames to every member. Past a burst
its joins and leaves are coalesced into ``presence_changed`` counts (``core.bigroom``). They were
coalesced for the whole room, whoever caused them, which let one address hide every other user's
joins: 598 cycles of one address in 2 s and a user joining next was never named. So each join
and leave on the room's channel names its client (:func:`cause_of`, carried by the envelope) and
each client has a bucket of its own in the room: only a client past its burst is coalesced, the
others are still named.

A room-wide bucket, spent by the events still named, stays as a second line: several clients
churning at once (each under its own rate) have the whole room coalesced, as before. It holds
twice a client's burst, so one churner's burst leaves the room another client's worth.

A client is known by its opaque key (:func:`cause_of`); events whose client no node knows (a dead
node's members reaped by Redis, a previous release's nodes) share one key, :data:`UNTOLD`, and
so do clients past :data:`CLIENTS_PER_ROOM`: the room's state is bounded whatever the churner
does (a few hundred bytes per client, 64 clients).
"""

from __future__ import annotations

import base64
import functools
import hashlib
from typing import Final

# One client's joins and leaves of one room (as every node sees them) told member by member: a
# burst (an office behind one address, a user's tabs after a fault) and then a rate.
CHURN_BURST: Final = 100
CHURN_RATE: Final = 10.0
# Everybody's named joins and leaves of the room together (several churning clients).
ROOM_CHURN_BURST: Final = 2 * CHURN_BURST
ROOM_CHURN_RATE: Final = 2 * CHURN_RATE
# Clients with a bucket of their own per room; the next ones share UNTOLD's. A bucket is kept
# only until it refilled (CHURN_BURST / CHURN_RATE = 10 s after the client's last event).
CLIENTS_PER_ROOM: Final = 64
UNTOLD: Final = ""
# The burst-th token of a bucket is spent at full_at == now + burst / rate, up to float sums.
_ROUNDING: Final = 1e-6


@functools.lru_cache(maxsize=4096)  # a client's every join and leave: one hash per client
def cause_of(client_key: str) -> str:
    """The opaque key of a client ("sub:<token subject>" or "ip:<address>") on room channels:
    the same on every node, never the subject or address itself (16 characters)."""
    digest = hashlib.blake2b(client_key.encode(), digest_size=12, person=b"roomcast-cause").digest()
    return base64.urlsafe_b64encode(digest).decode()


class RoomChurn:
    """The churn buckets of one room: which of its joins and leaves are coalesced.

    A bucket is one float, the time it is full again (``full_at``): it holds ``burst - (full_at -
    now) * rate`` tokens, an event moves ``full_at`` on by ``1 / rate``, and the bucket is empty
    when ``full_at`` is more than ``burst / rate`` ahead. Measured: a room's state is about 160
    bytes, and each client's about 140 more (its entry, float and key): 65 clients (the UNTOLD
    one too) are about 9.2 KB per room at most. A client's entry goes at the room's next join or
    leave once full again (10 s after its last), all of them when the node leaves the room.
    """

    __slots__ = ("_churners", "_clients", "_room_churning", "_room_full_at")

    def __init__(self) -> None:
        self._room_full_at = float("-inf")
        self._room_churning = False
        # full_at per client, ordered by each client's last event (roughly: the first ones are
        # full again first).
        self._clients: dict[str, float] = {}
        # Clients whose bucket churns (coalesced); made for the first (an empty set is 216 bytes).
        self._churners: set[str] | None = None

    @property
    def churning(self) -> bool:
        """Some of the room's joins and leaves are coalesced now."""
        return self._room_churning or bool(self._churners)

    @property
    def clients(self) -> int:
        """Clients with a bucket of their own now (at most CLIENTS_PER_ROOM, and UNTOLD)."""
        return len(self._clients)

    def coalesced(self, cause: str, now: float) -> bool:
        """A join or leave of ``cause``'s client: True when it is coalesced, not named."""
        clients = self._clients
        self._forget_full(now)
        full_at = clients.pop(cause, None)
        if full_at is None:
            if len(clients) >= CLIENTS_PER_ROOM and cause != UNTOLD:
                return self.coalesced(UNTOLD, now)
            full_at = now
        elif full_at <= now and self._churners:
            self._churners.discard(cause)  # full again: a new burst
        full_at, empty = _spend(full_at, now, CHURN_BURST, CHURN_RATE)
        clients[cause] = full_at  # last: the most recent
        churners = self._churners
        if empty:
            if churners is None:
                churners = self._churners = set()
            churners.add(cause)
        if churners and cause in churners:
            return True  # the churner's own events spend nothing of the room's
        if self._room_churning and self._room_full_at <= now:
            self._room_churning = False
        self._room_full_at, empty = _spend(
            self._room_full_at, now, ROOM_CHURN_BURST, ROOM_CHURN_RATE
        )
        self._room_churning = self._room_churning or empty
        return self._room_churning

    def settle(self, now: float) -> bool:
        """Forget the clients full again; True when nothing of the room is coalesced any more
        (the next event is named, whoever causes it)."""
        self._forget_full(now)
        clients, churners = self._clients, self._churners
        if churners:
            for cause in [c for c in churners if clients[c] <= now]:
                churners.discard(cause)  # full again, behind a client that is not yet
        if self._room_churning and self._room_full_at <= now:
            self._room_churning = False
        return not self.churning

    def _forget_full(self, now: float) -> None:
        """Drop buckets from the oldest while they are full again: a full bucket is a new one."""
        clients = self._clients
        while clients:
            cause = next(iter(clients))
            if clients[cause] > now:
                return
            del clients[cause]
            if self._churners:
                self._churners.discard(cause)


def _spend(full_at: float, now: float, burst: int, rate: float) -> tuple[float, bool]:
    """One token out of a bucket full at ``full_at``: its new full_at, and True when it had none
    left (then it stays empty, not below)."""
    full_at = max(full_at, now) + 1.0 / rate
    limit = now + burst / rate
    if full_at > limit + _ROUNDING:
        return limit, True
    return full_at, False
