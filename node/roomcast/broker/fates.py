"""The fate of a chat message whose reply was lost (issue 14).

A publish script that was sent on a command link that then died (``CLIENT KILL``, a timeout on a
stalled or partitioned Redis) may have run or not. It carries a deadline (see
:mod:`roomcast.broker.deadline`), so once that deadline is over its fate is settled for good; the
node then looks for the message in the room's history, by its exact JSON prefix (room, username,
text, timestamp): found, it is acknowledged with its offset; surely absent, the sender is told
``unavailable``; when history cannot tell (epoch changed, trimmed past it, Redis unreachable for
too long) the sender is told ``unconfirmed``: it may or may not have been published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from roomcast.broker import (
    BrokerUnavailable,
    FailureHandler,
    PublishedHandler,
    RoomRateLimited,
    Unconfirmed,
    scripts,
)
from roomcast.broker.deadline import RedisClock, now_ms
from roomcast.broker.links import LinkLost

log = logging.getLogger("roomcast.broker.fates")

_FIRST_RETRY: Final = 0.05
_MAX_RETRY: Final = 0.5


class Publication:
    """One chat message on its way to Redis, and what it takes to learn its fate."""

    __slots__ = (
        "deadline_ms",
        "known_epoch",
        "known_last",
        "on_failure",
        "on_published",
        "prefix",
        "resolver",
        "room",
    )

    def __init__(
        self,
        resolver: FateResolver,
        room: str,
        prefix: bytes,
        known: tuple[str, int],
        deadline_ms: int,
        on_published: PublishedHandler | None,
        on_failure: FailureHandler | None,
    ) -> None:
        self.resolver = resolver
        self.room = room
        self.prefix = prefix
        # Where the room stood on this node when the message was sent: any run of it comes after.
        self.known_epoch, self.known_last = known
        self.deadline_ms = deadline_ms
        self.on_published = on_published
        self.on_failure = on_failure

    def settle(self, reply: Any, error: Exception | None) -> None:
        """A command link's answer: the script's reply, a refusal, or a lost link."""
        if error is None:
            offset, epoch = reply  # the publish script answers {offset, epoch}
            if offset == 0:
                self.fail(BrokerUnavailable("redis ran it past its deadline: not published"))
            elif offset == scripts.ROOM_REFUSED:  # {ROOM_REFUSED, retry ms}
                self.fail(RoomRateLimited(int(epoch) / 1000))
            else:
                self.published(epoch.decode(), int(offset))
        elif isinstance(error, LinkLost):
            self.resolver.resolve(self)
        elif isinstance(error, BrokerUnavailable):
            self.fail(error)  # refused by Redis, or never sent
        else:
            self.fail(BrokerUnavailable(str(error)))

    def published(self, epoch: str, offset: int) -> None:
        if self.on_published is not None:
            self.on_published(epoch, offset)

    def fail(self, error: BrokerUnavailable) -> None:
        if self.on_failure is not None:
            self.on_failure(error)


# Runs the find script for a publication: {'found', offset, epoch}, {'absent'} or {'unknown'}.
Finder = Callable[[Publication], Awaitable[Any]]


class FateResolver:
    """Settles publications whose link died, once their deadline is over."""

    def __init__(self, find: Finder, clock: Callable[[], RedisClock], patience: float) -> None:
        self._find = find
        self._clock = clock
        self._patience = patience  # how long Redis may stay unreachable before ``unconfirmed``
        self._tasks: set[asyncio.Task[None]] = set()
        self.found = 0  # lost replies whose message history holds: acknowledged late
        self.absent = 0  # lost replies whose message surely never ran: ``unavailable``
        self.unconfirmed = 0  # could not tell: ``unconfirmed``

    def counters(self) -> dict[str, int]:
        return {"found": self.found, "absent": self.absent, "unconfirmed": self.unconfirmed}

    def resolve(self, publication: Publication) -> None:
        task = asyncio.create_task(self._resolve(publication), name="publication fate")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, publication: Publication) -> None:
        wait_ms = self._clock().settled_at(publication.deadline_ms) - now_ms()
        if wait_ms > 0:
            await asyncio.sleep(wait_ms / 1000)
        give_up = time.monotonic() + self._patience
        delay = _FIRST_RETRY
        while True:
            try:
                reply = await self._find(publication)
                break
            except asyncio.CancelledError:
                raise
            except BrokerUnavailable as exc:
                if time.monotonic() + delay > give_up:
                    self._unconfirmed(publication, f"redis unreachable: {exc}")
                    return
            await asyncio.sleep(delay)
            delay = min(2 * delay, _MAX_RETRY)
        status = reply[0]
        if status == b"found":
            self.found += 1
            publication.published(reply[2].decode(), int(reply[1]))
        elif status == b"absent":
            self.absent += 1
            publication.fail(BrokerUnavailable("not published: redis never ran it"))
        else:
            self._unconfirmed(publication, "the room's history cannot tell")

    def _unconfirmed(self, publication: Publication, why: str) -> None:
        self.unconfirmed += 1
        log.warning("message fate unknown", extra={"room": publication.room, "error": why})
        publication.fail(Unconfirmed(f"may or may not have been published: {why}"))

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
