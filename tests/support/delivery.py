"""Steady chat traffic through real nodes, and the delivery guarantee checked over what every
connected member saw: each acknowledged message delivered exactly once and in order, or covered
by a ``loss`` event; nothing refused ever delivered; the same text at the same offset for all.

Members stay connected through the fault under test (they never rejoin): what they miss can only
be made good by the nodes themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from roomcast.broker import scripts
from tests.support.wsclient import scaled

Event = dict[str, Any]
Position = tuple[str, int]  # (epoch, offset)


@dataclass
class Member:
    """One connection in one room, reading everything it is sent, in order."""

    name: str
    room: str
    ws: ClientConnection
    node: str = ""
    messages: list[tuple[str, int, str]] = field(default_factory=list)  # (epoch, offset, text)
    losses: list[Event] = field(default_factory=list)
    # When this member got each loss event, and first learned of each message (its ack or its
    # delivery), on the test's monotonic clock: a loss passing over epochs excuses only what
    # existed before it.
    loss_times: list[float] = field(default_factory=list)
    seen_at: dict[Position, float] = field(default_factory=dict)
    acked: dict[str, Position] = field(default_factory=dict)  # request id -> position
    refused: set[str] = field(default_factory=set)  # request ids answered with an error
    # Answered ``unconfirmed``: may or may not have been published (then to everyone).
    unconfirmed: set[str] = field(default_factory=set)
    texts: dict[str, str] = field(default_factory=dict)  # request id -> text sent
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None
    closed: bool = False

    def record(self, event: Event) -> None:
        kind = event.get("type")
        now = time.monotonic()
        if kind == "message" and event.get("room") == self.room:
            self.messages.append((event["epoch"], event["offset"], event["text"]))
            self.seen_at.setdefault((event["epoch"], event["offset"]), now)
        elif kind == "loss" and event.get("room") == self.room:
            self.losses.append(event)
            self.loss_times.append(now)
        elif kind == "ack":
            position = (event["epoch"], event["offset"])
            self.acked[str(event["id"])] = position
            self.seen_at.setdefault(position, now)
        elif kind == "error" and "id" in event and event.get("code") == "unconfirmed":
            self.unconfirmed.add(str(event["id"]))
        elif kind == "error" and "id" in event:
            self.refused.add(str(event["id"]))
        self.changed.set()

    async def read(self) -> None:
        try:
            async for raw in self.ws:
                self.record(json.loads(raw))
        except ConnectionClosed:
            pass
        finally:
            self.closed = True
            self.changed.set()

    @property
    def pending(self) -> int:
        return len(self.texts) - len(self.acked) - len(self.refused) - len(self.unconfirmed)

    def covered(self, position: Position, first_seen: float | None = None) -> bool:
        """Told it will not get the message at ``position``, first seen (acked or delivered
        to anyone) at ``first_seen``: a loss naming its offsets, or an ``epoch_changed`` loss
        that passed over its epoch (docs/protocol.md: everything up to offset 1 of the new
        epoch is lost, including any epoch the room went through in between, unnamed)."""
        epoch, offset = position
        for loss, told_at in zip(self.losses, self.loss_times, strict=True):
            if (
                loss["epoch"] == epoch
                and loss["from_offset"] <= offset
                and (loss["to_offset"] is None or offset <= loss["to_offset"])
            ):
                return True
            if (
                loss["reason"] == "epoch_changed"
                and epoch not in (loss["epoch"], loss.get("new_epoch"))
                and first_seen is not None
                and first_seen <= told_at
            ):
                return True
        return False

    async def send_message(self, request_id: str, text: str) -> None:
        self.texts[request_id] = text
        frame = {"type": "message", "room": self.room, "text": text, "id": request_id}
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(json.dumps(frame))

    def seen(self) -> set[Position]:
        return {(epoch, offset) for epoch, offset, _ in self.messages}


async def join_member(url: str, room: str, name: str) -> Member:
    ws = await connect(url, open_timeout=scaled(10), max_size=2**22, max_queue=None)
    welcome = json.loads(await asyncio.wait_for(ws.recv(), scaled(10)))
    await ws.send(json.dumps({"type": "join", "room": room, "username": name}))
    async with asyncio.timeout(scaled(10)):
        while True:
            event = json.loads(await ws.recv())
            if event["type"] == "joined":
                break
            assert event["type"] != "error", event
    member = Member(name, room, ws, node=welcome["node"])
    member.reader = asyncio.create_task(member.read())
    return member


async def awaiting(member: Member, condition: Callable[[], bool]) -> None:
    """Woken by each event ``member`` receives, until ``condition`` holds."""
    async with asyncio.timeout(scaled(10)):
        while not condition():
            member.changed.clear()
            if condition():
                break
            await member.changed.wait()


class Traffic:
    """Rooms with readers and senders (senders are members too), each sender at a steady pace."""

    def __init__(self, members: list[Member], senders: list[Member], interval: float) -> None:
        self.members = members
        self.senders = senders
        self.interval = interval
        self._serial = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    @classmethod
    async def start(
        cls,
        url: str | Callable[[int], str],
        rooms: list[str],
        readers: int = 3,
        senders: int = 2,
        interval: float = 0.02,
    ) -> Traffic:
        """``url(i)`` may spread the i-th connection over the nodes."""
        pick = url if callable(url) else (lambda _i: url)
        members: list[Member] = []
        sending: list[Member] = []
        index = 0
        for room in rooms:
            for reader in range(readers + senders):
                member = await join_member(pick(index), room, f"{room}-m{reader}")
                index += 1
                members.append(member)
                if reader >= readers:
                    sending.append(member)
        traffic = cls(members, sending, interval)
        traffic._tasks = [asyncio.create_task(traffic._send(s)) for s in sending]
        return traffic

    async def _send(self, sender: Member) -> None:
        while not self._stop.is_set() and not sender.closed:
            request_id = f"{sender.name}-{next(self._serial)}"
            await sender.send_message(request_id, f"text of {request_id}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)

    def acks(self) -> int:
        return sum(len(sender.acked) for sender in self.senders)

    async def until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait, woken by every event any member receives, until ``condition`` holds."""
        await until_changed([m.changed for m in self.members], condition, timeout)
        del what  # named for the reader of a timeout's traceback

    async def more_acks(self, count: int, timeout: float = 20) -> None:
        """Every sender had ``count`` more messages acknowledged than now."""
        wanted = {sender.name: len(sender.acked) + count for sender in self.senders}
        await self.until(
            lambda: all(len(s.acked) >= wanted[s.name] for s in self.senders),
            timeout,
            "acknowledgements",
        )

    async def finish(self, timeout: float = 20) -> None:
        """Stop sending; wait until each message is answered and every member has every
        acknowledged message of its room, delivered or covered by a loss event."""
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self.until(lambda: all(s.pending == 0 for s in self.senders), timeout, "answers")
        await self.until(lambda: not self.missing(), timeout, "every acknowledged message")

    def acknowledged(self, room: str) -> dict[Position, str]:
        positions: dict[Position, str] = {}
        for sender in self.senders:
            if sender.room == room:
                for request_id, position in sender.acked.items():
                    assert position not in positions, f"two messages acked at {position}"
                    positions[position] = sender.texts[request_id]
        return positions

    def reused_positions(self) -> list[Position]:
        """Positions acknowledged to two different messages (a primary that lost writes
        handing their offsets out again)."""
        seen: set[tuple[str, str, int]] = set()
        reused = []
        for sender in self.senders:
            for epoch, offset in sender.acked.values():
                if (sender.room, epoch, offset) in seen:
                    reused.append((epoch, offset))
                seen.add((sender.room, epoch, offset))
        return sorted(reused)

    def first_seen(self, room: str, position: Position) -> float | None:
        """When any connection of ``room`` first learned the message at ``position`` existed."""
        times = [
            m.seen_at[position] for m in self.members if m.room == room and position in m.seen_at
        ]
        return min(times, default=None)

    def missing(self) -> dict[str, list[Position]]:
        gaps: dict[str, list[Position]] = {}
        for member in self.members:
            seen = member.seen()
            lost = [
                p
                for p in self.acknowledged(member.room)
                if p not in seen and not member.covered(p, self.first_seen(member.room, p))
            ]
            if lost:
                gaps[member.name] = sorted(lost)
        return gaps

    def check(self) -> None:
        """The guarantee, over everything every member saw."""
        refused_texts = {
            sender.texts[request_id] for sender in self.senders for request_id in sender.refused
        }
        for member in self.members:
            assert not member.closed, f"{member.name} was disconnected"
            acknowledged = self.acknowledged(member.room)
            positions = [(epoch, offset) for epoch, offset, _ in member.messages]
            assert len(positions) == len(set(positions)), f"{member.name}: duplicates"
            epochs: list[str] = []
            last = 0
            for epoch, offset, text in member.messages:
                assert text not in refused_texts, f"{member.name} got a refused message"
                if acknowledged.get((epoch, offset), text) != text:
                    raise AssertionError(f"{member.name}: another text at {epoch}/{offset}")
                if not epochs or epochs[-1] != epoch:
                    assert epoch not in epochs, f"{member.name}: back to epoch {epoch}"
                    epochs.append(epoch)
                    last = 0
                assert offset > last, f"{member.name}: {offset} after {last} in {epoch}"
                last = offset
        assert not self.missing(), self.missing()
        self._check_unconfirmed()

    def _check_unconfirmed(self) -> None:
        """An ``unconfirmed`` message that was published after all reaches every member."""
        for sender in self.senders:
            for request_id in sender.unconfirmed:
                text = sender.texts[request_id]
                room = [m for m in self.members if m.room == sender.room]
                got = [m for m in room if any(t == text for _, _, t in m.messages)]
                if not got:
                    continue
                epoch, offset, _ = next(x for x in got[0].messages if x[2] == text)
                for member in room:
                    first_seen = self.first_seen(sender.room, (epoch, offset))
                    assert member in got or member.covered((epoch, offset), first_seen), (
                        f"{member.name} never got unconfirmed {text!r}, delivered to others"
                    )

    def summary(self) -> str:
        return (
            f"acked {self.acks()}, refused {sum(len(s.refused) for s in self.senders)}, "
            f"unconfirmed {sum(len(s.unconfirmed) for s in self.senders)}, "
            f"delivered {sum(len(m.messages) for m in self.members)}, "
            f"loss events {sum(len(m.losses) for m in self.members)}"
        )

    async def close(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for member in self.members:
            await member.ws.close()
        await asyncio.gather(
            *(m.reader for m in self.members if m.reader is not None), return_exceptions=True
        )


async def until_changed(
    changes: list[asyncio.Event], condition: Callable[[], bool], timeout: float
) -> None:
    """Wait, woken by each of ``changes`` (set on every event a client gets), until
    ``condition`` holds."""
    async with asyncio.timeout(scaled(timeout)):
        while not condition():
            waits = [asyncio.ensure_future(changed.wait()) for changed in changes]
            for changed in changes:
                changed.clear()
            if condition():
                for wait in waits:
                    wait.cancel()
                break
            _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for wait in pending:
                wait.cancel()


async def refused_but_kept(traffic: Traffic, admin: redis.Redis, rooms: list[str]) -> list[str]:
    """The texts of refused messages that a room's history holds: none when each refusal was
    true (the script refused before it changed anything)."""
    refused = {s.texts[request_id] for s in traffic.senders for request_id in s.refused}
    kept: list[str] = []
    for room in rooms:
        history = await in_thread(partial(admin.lrange, scripts.room_keys(room)[2], 0, -1))
        # Quoted, as the entry's JSON holds it: "text of m-1" is no match for "text of m-12".
        kept += [
            text for entry in history for text in refused if json.dumps(text) in entry.decode()
        ]
    return kept


async def finish_refusals_true(
    traffic: Traffic, admin: redis.Redis, rooms: list[str], fault: str
) -> None:
    """Stop sending, then the guarantee over a Redis that kept its data while it refused
    writes: no ``loss`` at all, and no refused message in any history."""
    await traffic.finish()
    print(f"\n{fault}: {traffic.summary()}")
    traffic.check()
    assert all(not member.losses for member in traffic.members)
    assert not await refused_but_kept(traffic, admin, rooms)


async def in_thread(action: Callable[[], Any]) -> Any:
    """A blocking fault action (kill, restart) that must not stall the members' readers."""
    return await asyncio.to_thread(action)


Fault = Callable[[], Awaitable[None]]
