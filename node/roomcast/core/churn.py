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
churning at once (each under its own rate) have the room coalesced. It holds twice a client's
burst, so one churner's burst leaves the room another client's worth. Its last quarter is kept
for clients at a person's pace (:data:`PACE_RATE` after :data:`PACE_BURST`, over 20 s): three
addresses each under its own 10/s kept the whole bucket empty, and a user joining meanwhile was
never named (red team 12), which is the cover a client bucket of its own was to end. Now it takes
21 addresses at a person's pace, and the room's named events are bounded by its bucket as before.

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
# only until it and the client's pace refilled (PACE_BURST / PACE_RATE = 20 s after the
# client's last event, at most).
CLIENTS_PER_ROOM: Final = 64
# A client's pace over a longer time: past it (after its burst) a client is heavy, though under
# its own bucket's rate, and leaves the room-wide bucket's reserve to the others. A person joins
# a room and leaves it a few times a minute; 100 people behind one address joining at once are
# 20 light and 80 heavy events, all named while the room's bucket holds them.
PACE_BURST: Final = 20
PACE_RATE: Final = 1.0
ROOM_CHURN_RESERVE: Final = ROOM_CHURN_BURST // 4
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
    when ``full_at`` is more than ``burst / rate`` ahead. A client has two: its bucket and its
    pace. Measured: a room's state is about 160 bytes, and each client's about 220 more (its
    entry, tuple, two floats and key): 65 clients (the UNTOLD one too) are about 14.5 KB per room
    at most. A client's entry goes at the room's next join or leave once both are full again (20 s
    after its last at most), all of them when the node leaves the room.
    """

    __slots__ = ("_churners", "_clients", "_room_churning", "_room_full_at")

    def __init__(self) -> None:
        self._room_full_at = float("-inf")
        self._room_churning = False
        # (full_at, the pace's full_at) per client, ordered by each client's last event
        # (roughly: the first ones are full again first). The pace is full again last.
        self._clients: dict[str, tuple[float, float]] = {}
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
        entry = clients.pop(cause, None)
        if entry is None:
            if len(clients) >= CLIENTS_PER_ROOM and cause != UNTOLD:
                return self.coalesced(UNTOLD, now)
            full_at = paced_at = now
        else:
            full_at, paced_at = entry
            if full_at <= now and self._churners:
                self._churners.discard(cause)  # full again: a new burst
        full_at, empty = _spend(full_at, now, CHURN_BURST, CHURN_RATE)
        paced_at, heavy = _spend(paced_at, now, PACE_BURST, PACE_RATE)
        clients[cause] = (full_at, paced_at)  # last: the most recent
        churners = self._churners
        if empty:
            if churners is None:
                churners = self._churners = set()
            churners.add(cause)
        if churners and cause in churners:
            return True  # the churner's own events spend nothing of the room's
        if self._room_churning and self._room_full_at <= now:
            self._room_churning = False
        if heavy:
            # Down to the reserve only, and coalesced from then on until the room refilled.
            spent, empty = _spend(
                self._room_full_at, now, ROOM_CHURN_BURST - ROOM_CHURN_RESERVE, ROOM_CHURN_RATE
            )
            self._room_full_at = max(self._room_full_at, spent)  # light ones spent below it
            self._room_churning = self._room_churning or empty
            return self._room_churning
        # A light client is named while the room has a token, reserve included.
        self._room_full_at, empty = _spend(
            self._room_full_at, now, ROOM_CHURN_BURST, ROOM_CHURN_RATE
        )
        self._room_churning = self._room_churning or empty
        return empty

    def settle(self, now: float) -> bool:
        """Forget the clients full again; True when nothing of the room is coalesced any more
        (the next event is named, whoever causes it)."""
        self._forget_full(now)
        clients, churners = self._clients, self._churners
        if churners:
            for cause in [c for c in churners if clients[c][0] <= now]:
                churners.discard(cause)  # full again, behind a client that is not yet
        if self._room_churning and self._room_full_at <= now:
            self._room_churning = False
        return not self.churning

    def _forget_full(self, now: float) -> None:
        """Drop buckets from the oldest while they are full again: a full bucket is a new one."""
        clients = self._clients
        while clients:
            cause = next(iter(clients))
            if clients[cause][1] > now:  # the pace: full again after the bucket
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
