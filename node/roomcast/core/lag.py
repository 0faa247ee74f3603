"""Members that fell behind: off room traffic until their socket drained, then brought up to date
from the rooms' history, so a burst never cuts off a reader that reads.

The transport calls :meth:`Lag.start` when a connection holds more than the send bound unread
(``ROOMCAST_SEND_BUFFER_BYTES``). From then on it gets no room traffic (``conn.lagging``), and
what it has of each room is the last offset fanned out there. Each time its socket drains, the
chat messages it missed are read from history and sent, room by room; once nothing is missing it
takes room traffic again, in the same loop turn as the last check, so nothing slips between.

What history holds is read by offset, so the lag must not pass over a ``loss``: a lagging
member misses the notice with the rest of the room's traffic (Redis restarted empty, the room
went on in a new epoch from offset 1), and reading on from its old offset would hand it the new
epoch's messages as if they followed. It is closed with 1013 instead, like a member whose
history is gone: its client rejoins with ``since`` and is answered ``recovered: false``.

Ephemeral events of the lag (``typing``, ``user_joined``, ``user_left``) are not kept anywhere
and are not replayed. A member is closed with 1013, as before, when it does not drain within
``ROOMCAST_LAG_TIMEOUT`` (a reader that does not read), or when the room's history no longer
holds what it missed (its client rejoins with ``since`` and learns ``too_old``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from roomcast.broker import Broker, BrokerUnavailable
from roomcast.core.history_pages import PAGE_MESSAGES
from roomcast.core.members import Member
from roomcast.runtime.metrics import Metrics

log = logging.getLogger("roomcast.lag")


class Lag:
    def __init__(
        self,
        loop: Callable[[], asyncio.AbstractEventLoop],
        broker: Callable[[], Broker],
        latest: dict[str, int],
        page_bytes: int,
        timeout: float,
        metrics: Metrics,
    ) -> None:
        self._loop = loop
        self._broker = broker
        # room -> offset of the last chat message fanned out here (kept by the node)
        self._latest = latest
        self._page_bytes = page_bytes
        self._timeout = timeout
        self._metrics = metrics
        # connection -> room -> offset of the last chat message it was sent
        self._behind: dict[Member, dict[str, int]] = {}
        # connection -> room -> the epoch of those offsets, once known (its join, or the
        # first page read): a page of another epoch does not follow them
        self._epochs: dict[Member, dict[str, str]] = {}
        self._deadlines: dict[Member, asyncio.TimerHandle] = {}
        self._recovering: dict[Member, asyncio.Task[None]] = {}
        self._drained: dict[Member, asyncio.Future[None]] = {}

    @property
    def count(self) -> int:
        return len(self._behind)

    def start(self, conn: Member, rooms: list[str]) -> None:
        """``conn`` (a live member of ``rooms``) falls behind now."""
        self._behind[conn] = {room: self._latest.get(room, 0) for room in rooms}
        self._metrics.lags.labels("lagged").inc()
        self._arm_deadline(conn)

    def start_at(self, conn: Member, room: str, have: int, epoch: str) -> None:
        """``conn`` joined ``room`` with ``since`` = ``have`` (of ``epoch``) and missed more
        than a page: it lags from there, and is caught up from history as it drains (never all
        at once)."""
        behind = self._behind.get(conn)
        if behind is None:
            self._behind[conn] = behind = {}
            self._metrics.lags.labels("lagged").inc()
            self._arm_deadline(conn)
        behind[room] = have
        self._epochs.setdefault(conn, {})[room] = epoch
        conn.lagging = True
        if conn.send_drained:
            self.drained(conn)

    def joined(self, conn: Member, room: str, offset: int) -> None:
        """A lagging ``conn`` completed a join: its catch-up covered ``room`` up to now."""
        behind = self._behind.get(conn)
        if behind is not None:
            behind[room] = max(offset, self._latest.get(room, 0))

    def left(self, conn: Member, room: str) -> None:
        behind = self._behind.get(conn)
        if behind is not None:
            behind.pop(room, None)
        epochs = self._epochs.get(conn)
        if epochs is not None:
            epochs.pop(room, None)

    def missed_loss(self, members: Iterable[Member]) -> None:
        """A ``loss`` notice for a room of ``members``: those lagging do not get it."""
        for conn in [m for m in members if m.lagging and not m.closed]:
            self._give_up(conn, "gap", "slow consumer: the room lost messages meanwhile")

    def forget(self, conn: Member) -> None:
        """The connection is gone."""
        self._behind.pop(conn, None)
        self._epochs.pop(conn, None)
        timer = self._deadlines.pop(conn, None)
        if timer is not None:
            timer.cancel()
        task = self._recovering.pop(conn, None)
        if task is not None:
            task.cancel()
        waiter = self._drained.pop(conn, None)
        if waiter is not None and not waiter.done():
            waiter.cancel()

    def drained(self, conn: Member) -> None:
        """Its socket drained: it reads. Send it the next part of what it missed."""
        if conn not in self._behind:
            return
        self._arm_deadline(conn)  # progress: a reader that reads gets more time
        waiter = self._drained.pop(conn, None)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(None)
        elif conn not in self._recovering:
            task = self._loop().create_task(self._recover(conn))
            self._recovering[conn] = task
            task.add_done_callback(lambda _: self._recovering.pop(conn, None))

    async def _recover(self, conn: Member) -> None:
        try:
            while not conn.closed:
                behind = self._behind.get(conn)
                if behind is None:
                    return
                stale = [
                    (room, have)
                    for room, have in behind.items()
                    if self._latest.get(room, 0) != have
                ]
                if not stale:
                    self._caught_up(conn)
                    return
                for room, have in stale:
                    if not await self._send_missed(conn, room, have):
                        return
                await self._until_drained(conn)
        except BrokerUnavailable as exc:
            self._give_up(conn, "gave_up", f"slow consumer: cannot catch up now ({exc})")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("catching up a lagging member failed", extra={"connection": conn.id})
            self._give_up(conn, "gave_up", "slow consumer: cannot catch up")

    async def _send_missed(self, conn: Member, room: str, have: int) -> bool:
        """The next page of what ``conn`` missed in ``room`` (read once it drained)."""
        latest = self._latest.get(room, 0)
        if latest < have:
            # Redis lost the room (a new epoch): its client rejoins with ``since``.
            self._give_up(conn, "gap", "slow consumer: the room's history was lost")
            return False
        page = await self._broker().history_page(
            room, have, min(latest - have, PAGE_MESSAGES), self._page_bytes
        )
        behind = self._behind.get(conn)
        if conn.closed or behind is None or room not in behind:
            return behind is not None and not conn.closed
        if not page.messages or page.offset < latest:
            # History no longer holds what it missed (or Redis lost the room): its client
            # rejoins with ``since`` and learns what is lost.
            self._give_up(conn, "gap", "slow consumer: fell behind further than history keeps")
            return False
        epochs = self._epochs.setdefault(conn, {})
        if epochs.setdefault(room, page.epoch) != page.epoch:
            # Redis lost the room meanwhile: these offsets are another epoch's.
            self._give_up(conn, "gap", "slow consumer: the room's history was lost")
            return False
        for message in page.messages:
            conn.send(message)
        behind[room] = have + len(page.messages)
        self._metrics.lags.labels("replayed").inc(len(page.messages))
        return True

    async def _until_drained(self, conn: Member) -> None:
        """Wait for what was just sent to be written, then for the socket to drain."""
        waiter: asyncio.Future[None] = self._loop().create_future()
        self._drained[conn] = waiter
        # After this turn's flush (scheduled before us): drained already, or resume_writing.
        self._loop().call_soon(self._check_drained, conn, waiter)
        await waiter

    def _check_drained(self, conn: Member, waiter: asyncio.Future[None]) -> None:
        if conn.send_drained and self._drained.get(conn) is waiter:
            del self._drained[conn]
            if not waiter.done():
                waiter.set_result(None)

    def _caught_up(self, conn: Member) -> None:
        # Checked and switched in one loop turn: no room event can fall between the two.
        del self._behind[conn]
        self._epochs.pop(conn, None)
        timer = self._deadlines.pop(conn, None)
        if timer is not None:
            timer.cancel()
        conn.lagging = False
        self._metrics.lags.labels("caught_up").inc()

    def _arm_deadline(self, conn: Member) -> None:
        timer = self._deadlines.pop(conn, None)
        if timer is not None:
            timer.cancel()
        self._deadlines[conn] = self._loop().call_later(
            self._timeout, self._give_up, conn, "timeout", "slow consumer: not reading fast enough"
        )

    def _give_up(self, conn: Member, outcome: str, reason: str) -> None:
        self._metrics.lags.labels(outcome).inc()
        self.forget(conn)
        conn.drop_slow_consumer(reason)
