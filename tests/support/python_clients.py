"""Python clients (``roomcast.client``) as an application runs them, readers and steady senders
in one room through a fault: each message a sender's ``wait()`` confirmed (with its epoch and
offset) reaches every client of the room once and in order as a ``ChatMessage``, or the client
is told with a ``Gap`` (``epoch_changed``, ``too_old``, ``unavailable``) that covers it; a
message refused to its sender (``SendError``) reaches nobody; a ``Gap`` the client found by
itself (``offsets_skipped``: a hole nobody announced) is a failure."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from roomcast.client import (
    ChatMessage,
    Disconnected,
    Gap,
    RoomcastClient,
    SendError,
    SendUnconfirmed,
)
from tests.support.delivery import Fault, until_changed
from tests.support.wsclient import scaled

__all__ = ["across"]

READERS = 3
SENDERS = 2
INTERVAL = 0.02
Position = tuple[str, int]


@dataclass
class Follower:
    """One client in one room: every event its application got, in order."""

    client: RoomcastClient
    room: str
    events: list[ChatMessage | Gap] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    disconnects: int = 0  # connections it lost (and, running on, made again)

    async def read(self) -> None:
        async for event in self.client:
            if isinstance(event, Disconnected):
                self.disconnects += 1
            if isinstance(event, (ChatMessage, Gap)) and event.room == self.room:
                self.events.append(event)
                self.changed.set()

    def gaps(self) -> list[Gap]:
        return [e for e in self.events if isinstance(e, Gap)]

    def delivered(self) -> list[Position]:
        return [(e.epoch, e.offset) for e in self.events if isinstance(e, ChatMessage)]

    def covered(self) -> list[tuple[str, int, float]]:
        """(epoch, first, last) ranges the client was told it will not get."""
        ranges: list[tuple[str, int, float]] = []
        epoch, offset = "", 0
        for event in self.events:
            if isinstance(event, ChatMessage):
                epoch, offset = event.epoch, event.offset
                continue
            if event.reason == "offsets_skipped":
                continue  # not a notice: the client saw a hole by itself
            if event.epoch != epoch:
                ranges.append((epoch, offset + 1, float("inf")))
                ranges.append((event.epoch, 1, event.offset))
            else:
                ranges.append((epoch, offset + 1, event.offset))
            epoch, offset = event.epoch, event.offset
        return ranges

    def missing(self, acked: dict[Position, str]) -> list[Position]:
        seen = set(self.delivered())
        told = self.covered()
        return sorted(
            p
            for p in acked
            if p not in seen and not any(e == p[0] and a <= p[1] <= b for e, a, b in told)
        )


@dataclass
class Sender:
    follower: Follower
    acked: dict[Position, str] = field(default_factory=dict)
    refused: set[str] = field(default_factory=set)
    unconfirmed: set[str] = field(default_factory=set)
    pending: set[asyncio.Task[None]] = field(default_factory=set)

    async def settle(self, text: str, wait: asyncio.Future[ChatMessage]) -> None:
        try:
            message = await wait
        except SendUnconfirmed:
            self.unconfirmed.add(text)
        except SendError:
            self.refused.add(text)
        else:
            self.acked[(message.epoch, message.offset)] = text
        # Out of ``pending`` before the wake-up: a done callback would run after it, so the
        # waiter could check, still see this task, and sleep with nothing left to wake it.
        task = asyncio.current_task()
        if task is not None:
            self.pending.discard(task)
        self.follower.changed.set()


async def follow(url: str, room: str, name: str) -> Follower:
    client = RoomcastClient(url, name, confirm_timeout=scaled(30))
    await client.__aenter__()
    await client.join(room)
    follower = Follower(client, room)
    follower.task = asyncio.create_task(follower.read())
    return follower


async def send_steadily(sender: Sender, stop: asyncio.Event, serial: itertools.count[int]) -> None:
    client, room = sender.follower.client, sender.follower.room
    while not stop.is_set():
        text = f"{sender.follower.client.username} {next(serial)}"
        outgoing = await client.send(room, text)
        task = asyncio.create_task(sender.settle(text, asyncio.ensure_future(outgoing.wait())))
        sender.pending.add(task)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), INTERVAL)


async def until_true(followers: list[Follower], check: Callable[[], bool], timeout: float) -> None:
    """Wait, woken by every event any client gets, until ``check`` holds."""
    await until_changed([f.changed for f in followers], check, timeout)


async def across(url: str, room: str, fault: Fault, what: str) -> list[Follower]:
    """Readers and senders of ``room`` through ``fault``, the guarantee checked over them;
    returns them (closed)."""
    followers = [await follow(url, room, f"reader{i}") for i in range(READERS)]
    senders = [Sender(await follow(url, room, f"sender{i}")) for i in range(SENDERS)]
    everyone = [*followers, *(s.follower for s in senders)]
    stop = asyncio.Event()
    serial = itertools.count(1)
    loops = [asyncio.create_task(send_steadily(s, stop, serial)) for s in senders]

    def acks() -> int:
        return sum(len(s.acked) for s in senders)

    def acked() -> dict[Position, str]:
        positions: dict[Position, str] = {}
        for sender in senders:
            for position, text in sender.acked.items():
                assert position not in positions, f"two messages confirmed at {position}"
                positions[position] = text
        return positions

    try:
        wanted = acks() + 10
        await until_true(everyone, lambda: acks() >= wanted, 20)
        await fault()
        wanted = acks() + 20
        await until_true(everyone, lambda: acks() >= wanted, 40)
        stop.set()
        await asyncio.gather(*loops)
        await until_true(everyone, lambda: not any(s.pending for s in senders), 40)
        await until_true(everyone, lambda: not any(f.missing(acked()) for f in everyone), 30)
        refused = {text for s in senders for text in s.refused}
        gaps = [
            [(e.reason, e.epoch, e.offset) for e in f.events if isinstance(e, Gap)]
            for f in everyone
        ]
        print(
            f"\n{what}: confirmed {acks()}, refused {len(refused)}, unconfirmed "
            f"{sum(len(s.unconfirmed) for s in senders)}; gaps per client {gaps}"
        )
        # A message whose fate its sender was not told: published (to everyone) or not at all.
        unconfirmed = {text for s in senders for text in s.unconfirmed}
        published = {
            e.text: (e.epoch, e.offset)
            for f in everyone
            for e in f.events
            if isinstance(e, ChatMessage) and e.text in unconfirmed
        }
        for follower in everyone:
            assert not follower.missing({p: t for t, p in published.items()}), follower.room
        for follower in everyone:
            delivered = follower.delivered()
            assert len(delivered) == len(set(delivered)), "a message delivered twice"
            texts = [e.text for e in follower.events if isinstance(e, ChatMessage)]
            assert not refused & set(texts), "a refused message was delivered"
            assert len(texts) == len(set(texts)), "a message published twice (sent again)"
            skipped = [
                e for e in follower.events if isinstance(e, Gap) and e.reason == "offsets_skipped"
            ]
            assert not skipped, skipped
    finally:
        stop.set()
        for loop in loops:
            loop.cancel()
        for follower in everyone:
            await follower.client.__aexit__(None, None, None)
            if follower.task is not None:
                follower.task.cancel()
    return everyone
