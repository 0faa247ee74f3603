"""Token buckets: the per-connection frame flood guard and the message and typing limits."""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from roomcast.broker import BucketCharge

# What a chat message costs the history-write bucket beyond its text: the list entry's fields
# (room, username, offset, epoch, time) and, for a room of its own, its keys (~900 bytes).
MESSAGE_KEPT_OVERHEAD: Final = 1024

# What a room's first message leaves in Redis beyond its history: its offset counter, epoch and
# fence line (~280 bytes, MEMORY USAGE), kept a day after its last message so that an idle room
# keeps its epoch. Charged to the history-write bucket scaled by how much longer than a history
# they live (see room_made_cost): one client's fresh room per message left ~558 MiB a day.
ROOM_MADE_KEPT_BYTES: Final = 300


# A new room costs a client at most this fraction of its history-write burst (room_made_cost).
ROOM_MADE_BURST_SHARE: Final = 16


def room_made_cost(history_ttl: float, meta_ttl: float, burst: int | None = None) -> int:
    """What a message that makes a room costs a client's history-write bytes on top of its own:
    the room's day-long keys as the history bytes that would be held as long (43,200 at the
    defaults), so that the bucket's rate bounds both what a client's histories and what its
    rooms' offsets hold at once.

    At most a ``ROOM_MADE_BURST_SHARE``-th of the ``burst``: the cost grows as the history's
    ttl shrinks, and with a ttl of a second or two one new room cost more than the whole burst,
    so the client's next messages were refused for minutes (``ROOMCAST_HISTORY_TTL=1``: 384 s).
    Capped, a client still makes rooms one per ``cap / rate`` seconds (24 s at the default
    rate and burst), which keeps what their offsets leave in Redis small (~1 MB a day)."""
    cost = math.ceil(ROOM_MADE_KEPT_BYTES * meta_ttl / history_ttl)
    return cost if burst is None else min(cost, burst // ROOM_MADE_BURST_SHARE)


# What the broker port's charge() looks like: (owner, its buckets' charges).
ChargeSender = Callable[[str, Sequence[BucketCharge]], None]


@functools.lru_cache(maxsize=64)
def _burst_float(burst: int) -> float:
    return float(burst)


class RateLimiter:
    """Token bucket per connection: ``rate`` frames a second, bursts up to ``burst``."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens", "strikes")

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        # A new bucket is full, so when it was last filled does not matter (the refill is capped
        # at the burst): it shares its floats with every other new bucket of the same burst, and
        # gets floats of its own only once used. Each connection holds several buckets, most
        # never used (an idle member sends no messages and no typing).
        self._burst = self._tokens = _burst_float(burst)
        self._stamp = 0.0
        self.strikes = 0

    def allow(self, cost: float = 1.0) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= cost:
            self._tokens -= cost
            # An allowed frame pays back two strikes rather than all of them: a flood that the
            # node reads slowly (a loaded node, nginx's small reads) gets a token back every
            # 1/rate seconds, and a reset each time let it go on for ever, its every frame
            # answered with an error (issue 15's ping flood: ~1,000 refusals per connection).
            # A client keeps its connection up to three times its rate, sustained.
            strikes = self.strikes
            if strikes:
                self.strikes = strikes - 2 if strikes > 2 else 0
            return True
        self.strikes += 1
        return False

    def allow_keeping(self, reserve: float) -> bool:
        """allow(), but only while ``reserve`` tokens stay behind for others (a shared bucket
        that its heavy users may not empty: see Node._room_reserve). No strikes: a shared
        bucket's refusals are not this sender's flood."""
        if reserve <= 0:
            return self.allow()
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= 1 + reserve:
            self._tokens -= 1
            return True
        return False

    @property
    def level(self) -> float:
        """The tokens there now (below zero: owed)."""
        self.ready()
        return self._tokens

    def ready(self) -> bool:
        """Whether a token is there, without taking it (see spend)."""
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        return self._tokens >= 1

    def spend(self, debt: int, cost: float = 1.0) -> None:
        """Take ``cost`` tokens for something that cannot be refused (a leave, an answer already
        read), owing at most ``debt`` tokens: the debt is paid back before ready() is true
        again."""
        self.ready()
        # A debt already deeper (owed for leaves) is kept, not forgiven.
        self._tokens = max(min(self._tokens, -float(debt)), self._tokens - cost)

    def seconds_until_ready(self) -> float:
        """How long until ready() is true (0: it is)."""
        self.ready()
        return max(0.0, (1 - self._tokens) / self._rate)

    def refund(self, amount: float) -> None:
        """Give back tokens taken for more than was used (up to the burst)."""
        self.ready()
        self._tokens = min(self._burst, self._tokens + amount)

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> int:
        return int(self._burst)

    def follow(self, level: float) -> None:
        """Come down to ``level``, this bucket's level over every node (see SharedCharges);
        never up, since this node's admissions after the charge are not counted in it yet."""
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate, level)
        self._stamp = now

    def strike(self) -> None:
        """A refusal by another bucket (one shared with other connections) counts here too."""
        self.strikes += 1

    @property
    def flooding(self) -> bool:
        # Rejected a whole burst's worth more than twice what got through meanwhile: the
        # client ignores our rate_limited errors.
        return self.strikes > self._burst


class BucketPool:
    """Token buckets shared by key (a user, an address, a room) over many connections.

    A key's bucket lives while connections hold it, and a while after (until it would have
    refilled): closing every connection and reconnecting does not buy a fresh burst.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = burst
        self._held: dict[str, tuple[RateLimiter, int]] = {}
        # key -> (bucket, when released), oldest first; kept for one refill time.
        self._idle: dict[str, tuple[RateLimiter, float]] = {}
        self._refill = burst / rate

    def __len__(self) -> int:
        return len(self._held) + len(self._idle)

    def acquire(self, key: str) -> RateLimiter:
        if self._idle:  # six acquires per handshake: no call while nothing waits to expire
            self._prune()
        held = self._held.get(key)
        if held is not None:
            self._held[key] = (held[0], held[1] + 1)
            return held[0]
        idle = self._idle.pop(key, None)
        bucket = idle[0] if idle is not None else RateLimiter(self._rate, self._burst)
        self._held[key] = (bucket, 1)
        return bucket

    def allow(self, key: str) -> bool:
        """One token of ``key``'s bucket if it has one, for a key nothing holds between calls
        (a client's pace): acquired and released around the one ``allow()``."""
        bucket = self.acquire(key)
        try:
            return bucket.allow()
        finally:
            self.release(key)

    def get(self, key: str) -> RateLimiter | None:
        held = self._held.get(key)
        return None if held is None else held[0]

    def release(self, key: str) -> None:
        held = self._held.get(key)
        if held is None:
            return
        if held[1] > 1:
            self._held[key] = (held[0], held[1] - 1)
            return
        del self._held[key]
        self._idle[key] = (held[0], time.monotonic())

    def _prune(self) -> None:
        if not self._idle:
            return
        deadline = time.monotonic() - self._refill
        # No copy of the whole dict first: this runs on every acquire, and after a mass
        # disconnect the dict holds every client that left (a reconnect storm was quadratic).
        expired = []
        for key, (_, released) in self._idle.items():
            if released > deadline:
                break  # insertion order is release order
            expired.append(key)
        for key in expired:
            del self._idle[key]


class ConnectionBudget:
    """What one connection may still do beyond its own frame, message and typing buckets: its
    joins, and the buckets it shares with the other connections of the same client."""

    __slots__ = (
        "client",
        "client_history",
        "client_history_writes",
        "client_joins",
        "client_messages",
        "client_token_checks",
        "client_typing",
        "joins",
    )

    def __init__(
        self,
        client: str,
        joins: RateLimiter,
        client_messages: RateLimiter,
        client_joins: RateLimiter,
        client_typing: RateLimiter,
        client_history: RateLimiter,
        client_token_checks: RateLimiter,
        client_history_writes: RateLimiter,
    ) -> None:
        self.client = client  # "sub:<token subject>" or "ip:<address>"
        self.joins = joins
        self.client_messages = client_messages
        self.client_joins = client_joins
        self.client_typing = client_typing
        self.client_history = client_history  # bytes of history answers
        self.client_token_checks = client_token_checks  # refreshes and room tokens checked
        self.client_history_writes = client_history_writes  # bytes of messages Redis keeps


@dataclass(frozen=True, slots=True)
class MessageRefusal:
    """Why a client's message (an HTTP post) is refused by a bucket it shares with its other
    connections, and in how many seconds that bucket takes it."""

    reason: str
    retry_after: float


class SharedCharges:
    """Makes a client's buckets hold over every node, without a round trip per action.

    Each node admits against its own copy of a bucket (so a message never waits for Redis) and
    charges what it admitted to the copy every node shares, in the broker: one command per
    owner (a client, or a room) and loop turn, however many actions and buckets it holds (a
    message spends two buckets of its client: one command, not two). The answer, each bucket's
    level over all nodes, brings the local copy down to it, so the next actions are refused
    here until the shared bucket refills. The nodes together overspend by at most what each
    admitted during one round trip; a charge that fails is forgotten (each copy still holds on
    its own node).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, send: ChargeSender) -> None:
        self._loop = loop
        self._send = send
        # owner -> bucket kind -> (bucket, cost so far, debt)
        self._pending: dict[str, dict[str, tuple[RateLimiter, int, int]]] = {}

    def charge(
        self, owner: str, kind: str, bucket: RateLimiter, debt: int = 1, cost: int = 1
    ) -> None:
        """An action of ``cost`` tokens admitted against ``owner``'s bucket ``kind``; the
        shared copy may owe ``debt`` tokens."""
        pending = self._pending
        buckets = pending.get(owner)
        if buckets is None:
            if not pending:
                self._loop.call_soon(self._flush)
            pending[owner] = {kind: (bucket, cost, debt)}
            return
        held = buckets.get(kind)
        buckets[kind] = (bucket, cost if held is None else held[1] + cost, debt)

    def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        for owner, buckets in pending.items():
            self._send(
                owner,
                [
                    BucketCharge(kind, cost, bucket.rate, bucket.burst, debt, bucket.follow)
                    for kind, (bucket, cost, debt) in buckets.items()
                ],
            )
