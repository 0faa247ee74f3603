"""Presence as counts plus pages of names, for rooms too big for one answer.

A page holds the usernames after a cursor (the last username of the previous page), in
codepoint order: a name present for the whole walk is on exactly one page, one that comes or goes
meanwhile on at most one. The room's full presence is read from the broker once per interval and
per room (then paged from that snapshot), so ten thousand members walking the list cost a
handful of reads, not one each.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from roomcast.broker import BrokerUnavailable, RoomPresence
from roomcast.wire import protocol

# Names per page: the default, and the most a client may ask for (a page of 1,000 names of up
# to 64 characters, each with the user_id of one user, is ~135 KB, inside the send bound; each
# more user under a name adds 27 bytes).
DEFAULT_PAGE: Final = 100
MAX_PAGE: Final = 1000
# Rooms whose snapshot is kept at once: a bound on memory (each is a room's whole presence).
MAX_SNAPSHOTS: Final = 64


@dataclass(frozen=True, slots=True)
class Snapshot:
    names: list[str]  # sorted
    # Of each name, the user_id of each of its connections (None: not known): its length is the
    # name's connection count. The lists the broker read, kept as they are.
    user_ids: list[list[str | None]]
    connections: int
    taken_at: float


@dataclass(frozen=True, slots=True)
class Page:
    members: dict[str, list[str | None]]  # username -> user_id of each connection, in order
    total_members: int  # distinct usernames in the whole room
    total_connections: int
    next: str | None  # the cursor of the next page; None: this was the last


def take_snapshot(presence: RoomPresence, now: float) -> Snapshot:
    names = sorted(presence)
    connections = sum(len(ids) for ids in presence.values())
    return Snapshot(names, [presence[n] for n in names], connections, now)


def page_of(snap: Snapshot, after: str | None, limit: int) -> Page:
    start = 0 if after is None else bisect.bisect_right(snap.names, after)
    end = min(start + limit, len(snap.names))
    members = dict(zip(snap.names[start:end], snap.user_ids[start:end], strict=True))
    more = end < len(snap.names)
    return Page(members, len(snap.names), snap.connections, snap.names[end - 1] if more else None)


def answer(
    snap: Snapshot,
    big: bool,
    room: str,
    limit: int | None,
    after: str | None,
    request_id: protocol.RequestId = None,
) -> bytes:
    """The ``presence`` answer: the whole list as ever for a small room asked without ``limit``
    or ``after``; otherwise a page (a big room's first page when neither was given)."""
    if limit is None and after is None and not big:
        whole = dict(zip(snap.names, snap.user_ids, strict=True))
        return protocol.presence(room, whole, request_id)
    page = page_of(snap, after, limit or DEFAULT_PAGE)
    return protocol.presence_page(
        room, page.members, page.total_members, page.total_connections, page.next, request_id
    )


class PresencePages:
    """Snapshots of big rooms' presence, each reused for ``max_age`` seconds; one read at a time
    per room (concurrent askers share it). A room of fewer than ``keep_from`` connections is
    read afresh each time: cheap, and a member asking right after its join sees itself
    (``keep_from`` 0: big rooms are off, nothing is kept)."""

    def __init__(
        self,
        read: Callable[[str], Awaitable[RoomPresence]],
        clock: Callable[[], float],
        max_age: float,
        keep_from: int,
    ) -> None:
        self._read = read
        self._clock = clock
        self._max_age = max_age
        self._keep_from = keep_from
        self._snapshots: dict[str, Snapshot] = {}
        self._reading: dict[str, asyncio.Future[Snapshot]] = {}

    def is_big(self, snap: Snapshot) -> bool:
        return bool(self._keep_from) and snap.connections >= self._keep_from

    async def snapshot(self, room: str) -> Snapshot:
        now = self._clock()
        snap = self._snapshots.get(room)
        if snap is not None and now - snap.taken_at < self._max_age:
            return snap
        pending = self._reading.get(room)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Snapshot] = asyncio.get_running_loop().create_future()
        self._reading[room] = future
        try:
            snap = take_snapshot(await self._read(room), self._clock())
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        except BaseException:
            # This reader was cancelled (its connection went away): those sharing its read
            # get an answer they can report, not a cancellation that is not theirs.
            future.set_exception(BrokerUnavailable("presence read interrupted; ask again"))
            future.exception()
            raise
        finally:
            self._reading.pop(room, None)
        future.set_result(snap)
        if self.is_big(snap):
            self._keep(room, snap)
        return snap

    def _keep(self, room: str, snap: Snapshot) -> None:
        self._snapshots.pop(room, None)
        # Expired snapshots go first (oldest first, as inserted): only fresh ones hold memory.
        while self._snapshots:
            oldest = next(iter(self._snapshots))
            if snap.taken_at - self._snapshots[oldest].taken_at < self._max_age:
                break
            del self._snapshots[oldest]
        self._snapshots[room] = snap
        while len(self._snapshots) > MAX_SNAPSHOTS:
            del self._snapshots[next(iter(self._snapshots))]
