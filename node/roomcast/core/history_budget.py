"""What one client may make the node read from history: bytes of answers, over all its
WebSocket connections and HTTP requests, and over all nodes.

A `history` request is a few dozen bytes; its answer is up to a room's whole history
(ROOMCAST_HISTORY_BYTES), read from Redis. Only the request rates bounded it: 16 connections of
one address kept Redis busy 3.2 s in 5, and HTTP requests through nginx within the API rate
3 s in 4 (a bystander's round trip: seconds). Each answer now costs the client its messages'
bytes plus HISTORY_REQUEST_BYTES.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from roomcast.core.ratelimit import BucketPool, RateLimiter

# What a request costs beyond its answer's bytes: even an empty history is a Redis script call.
HISTORY_REQUEST_BYTES: Final = 1024
# Rooms whose last answer's size is remembered (the oldest are forgotten first).
MAX_REMEMBERED_ROOMS: Final = 4096

# (owner, bucket kind, bucket, debt, cost): charges the client's copy over every node
# (SharedCharges).
SharedCharge = Callable[[str, str, RateLimiter, int, int], None]


class HistoryBudget:
    """The clients' history buckets (bytes), and the size each room's answer had last.

    An answer's size is known only once its first page is read, and requests sent together on
    many connections all arrive before that. Each reserves on this node what the room's last
    answer held, owing up to a burst, and gets back what it did not use; the client's copy over
    all nodes is charged what was used. For a room whose size this node does not know yet, one
    request at a time learns it (reserving a page) while the others for that room wait: a
    hundred requests sent at once cannot all pass on a page's reserve, and sixteen rooms asked
    at once are not refused for reserving a whole history each."""

    def __init__(
        self, rate: float, burst: int, history_bytes: int, page_bytes: int, max_rooms: int = 16
    ) -> None:
        self._pool = BucketPool(rate, burst)
        self._largest = history_bytes + HISTORY_REQUEST_BYTES
        self._first_guess = page_bytes + HISTORY_REQUEST_BYTES
        # A join with `since` reserves at most a connection's share of the burst: a client back
        # from a disconnect rejoins all its rooms at once (up to max_rooms), and each reserving
        # a whole history left the fifth room onwards without its missed messages. What they
        # really read is charged when read (owing up to a burst), so one rejoin of every room
        # reads at most max_rooms histories before the client owes.
        self._catch_up_share = min(self._largest, max(self._first_guess, burst // max_rooms))
        self._sizes: OrderedDict[str, int] = OrderedDict()
        # room -> done when the request learning its size read its first page
        self._learning: dict[str, asyncio.Future[None]] = {}
        # (client, room) -> done when that client's request for the room read its first page
        self._reading: dict[tuple[str, str], asyncio.Future[None]] = {}
        self.shared: SharedCharge | None = None

    def acquire(self, client: str) -> RateLimiter:
        return self._pool.acquire(client)

    def release(self, client: str) -> None:
        self._pool.release(client)

    async def reserve(
        self, bucket: RateLimiter, room: str, client: str | None = None
    ) -> int | None:
        """The bytes reserved for an answer from ``room``, or None: the client owes, refuse.
        A reserve is always followed by settle() or cancel() (with the same ``client``).

        One ``client``'s requests for one room are read one after the other: the size
        remembered is the room's last answer's, and a room asked while empty (~1 KiB), then
        filled to its 2 MiB, let 64 connections asking it at once all pass on ~1 KiB each
        (32 MiB sent where the client's budget allowed 15). The next one reserves what the
        previous one found. Other rooms, and other clients, are not held up."""
        reading = (client, room) if client is not None else None
        while True:
            pending = self._learning.get(room)
            if pending is None and reading is not None:
                pending = self._reading.get(reading)
            if pending is None:
                break
            await asyncio.wait((pending,))  # a waiter cancelled leaves it to the others
        if not bucket.ready():
            return None
        reserved = self._sizes.get(room)
        loop = asyncio.get_running_loop()
        if reserved is None:
            reserved = self._first_guess
            self._learning[room] = loop.create_future()
        if reading is not None:
            self._reading[reading] = loop.create_future()
        bucket.spend(bucket.burst, reserved)
        return reserved

    def reserve_catch_up(self, bucket: RateLimiter, room: str) -> int | None:
        """The bytes reserved for what a join with `since` missed (the room's answer, at most a
        connection's share of the burst), or None: the client owes. Joins never wait for a
        room's size to be learned: a reconnect storm into one room would be one join at a time.
        Followed by settle(remember=False) or cancel()."""
        if not bucket.ready():
            return None
        reserved = min(self._sizes.get(room, self._catch_up_share), self._catch_up_share)
        bucket.spend(bucket.burst, reserved)
        return reserved

    def reserve_resume(self, bucket: RateLimiter, room: str) -> int | None:
        """The bytes an event-stream resume is charged as it opens (the room's answer size; a
        whole history for a room not asked yet: what it then sends is not counted), or None:
        the client owes. Followed by settle(used=None, remember=False)."""
        if not bucket.ready():
            return None
        reserved = self._sizes.get(room, self._largest)
        bucket.spend(bucket.burst, reserved)
        return reserved

    def charge_answer(self, client: str, bucket: RateLimiter, used: int) -> None:
        """A presence answer of ``used`` bytes, built before it is sent (check ``bucket.ready()``
        first): ~40 bytes asked for a room's whole member list (up to 1,000 names a page), like
        a `history` request, and only the frame rate bounded it (16 connections of one address:
        76 MiB in 4 s). Charged like a history answer, owing up to a burst."""
        cost = used + HISTORY_REQUEST_BYTES
        bucket.spend(bucket.burst, cost)
        if self.shared is not None:
            self.shared(client, "history", bucket, bucket.burst, cost)

    def cancel(
        self, bucket: RateLimiter, room: str, reserved: int, client: str | None = None
    ) -> None:
        """The answer was not read (Redis unavailable): its reserve is given back."""
        bucket.refund(reserved)
        self._learned(room)
        self._read(client, room)

    def settle(
        self,
        client: str,
        bucket: RateLimiter,
        room: str,
        reserved: int,
        used: int | None,
        *,
        remember: bool = True,
        whole: bool = True,
    ) -> None:
        """The answer's first page is read: ``used`` the answer's bytes, or None when only
        known to be larger than a page (counted as a room's whole history). Not ``remember``:
        a part of the history (a join's missed messages), not what the room's answer holds;
        then None keeps the reserve as the cost (an event stream's resume, not counted).
        Not ``whole``: an answer cut short by the request's ``limit``, charged what it held but
        not remembered as the room's size: a `limit: 1` answer made the next requests reserve
        ~1 KiB each, and 64 connections sending full requests right after it all passed (141
        MiB in 4 s where the client's limit allows ~24)."""
        cost = reserved if used is None and not remember else self._cost(used)
        if remember:
            if whole:
                sizes = self._sizes
                sizes[room] = cost
                sizes.move_to_end(room)
                if len(sizes) > MAX_REMEMBERED_ROOMS:
                    sizes.popitem(last=False)
            self._learned(room)
            self._read(client, room)
        if cost > reserved:
            bucket.spend(bucket.burst, cost - reserved)
        else:
            bucket.refund(reserved - cost)
        if self.shared is not None:
            self.shared(client, "history", bucket, bucket.burst, cost)

    def _cost(self, used: int | None) -> int:
        return self._largest if used is None else used + HISTORY_REQUEST_BYTES

    def _read(self, client: str | None, room: str) -> None:
        if client is None:
            return
        reading = self._reading.pop((client, room), None)
        if reading is not None and not reading.done():
            reading.set_result(None)

    def _learned(self, room: str) -> None:
        learning = self._learning.pop(room, None)
        if learning is not None and not learning.done():
            learning.set_result(None)
