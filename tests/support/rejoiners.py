"""Members that leave their room and join it again with ``since`` their last message, over and
over on one connection, checked as any member of ``Traffic`` (once, in order, nothing missed)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
from roomcast_dev.devcluster import LocalCluster
from websockets.exceptions import ConnectionClosed

from tests.support.delivery import Member, Traffic, join_member
from tests.support.posts import Admin, Poster, checked_after, on_every_path
from tests.support.wsclient import scaled

Event = dict[str, Any]
# What happens while the rejoiners churn; given the traffic, to wait on its acknowledgements.
ChurnFault = Callable[[Traffic], Awaitable[None]]


@dataclass
class Rejoiner:
    """Answers to its joins and leaves are queued for the loop that waits on them."""

    member: Member
    answers: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    rejoins: list[Event] = field(default_factory=list)  # each ``joined`` of a rejoin
    refused: list[Event] = field(default_factory=list)  # each refusal of a join or leave
    # What it sent and was sent, in order, to explain a failure: (direction, frame).
    trace: list[tuple[str, Event]] = field(default_factory=list)

    async def read(self) -> None:
        try:
            async for raw in self.member.ws:
                event = json.loads(raw)
                self.member.record(event)
                self.trace.append(("in", event))
                if event.get("type") in ("joined", "left") or (
                    event.get("type") == "error" and event.get("id") is None
                ):
                    self.answers.put_nowait(event)
        except ConnectionClosed:
            pass
        finally:
            self.member.closed = True
            self.member.changed.set()

    async def churn(self, stop: asyncio.Event) -> None:
        """Leave and rejoin until ``stop``; it ends in the room."""
        while not stop.is_set():
            await self._until_answered({"type": "leave", "room": self.member.room}, "left")
            epoch, offset, _ = self.member.messages[-1]
            since = {"epoch": epoch, "offset": offset}
            join = {"type": "join", "room": self.member.room, "username": self.member.name}
            self.rejoins.append(await self._until_answered(dict(join, since=since), "joined"))

    async def _until_answered(self, frame: Event, wanted: str) -> Event:
        """Send ``frame`` until it is answered ``wanted``; a refusal is sent again (after its
        ``retry_after`` when it names one), as the shipped clients do."""
        while True:
            self.trace.append(("out", frame))
            await self.member.ws.send(json.dumps(frame))
            answer = await asyncio.wait_for(self.answers.get(), scaled(10))
            if answer["type"] == wanted:
                return answer
            assert answer["type"] == "error", answer
            self.refused.append(answer)
            await asyncio.sleep(float(answer.get("retry_after") or 0))

    def around_duplicate(self) -> list[tuple[str, Event]]:
        """The frames before and after the first message it was sent twice (none: [])."""
        seen: set[tuple[str, int]] = set()
        for index, (direction, event) in enumerate(self.trace):
            if direction == "in" and event.get("type") == "message":
                position = (event["epoch"], event["offset"])
                if position in seen:
                    return self.trace[max(0, index - 12) : index + 3]
                seen.add(position)
        return []


async def rejoiner(url: str, room: str, name: str) -> Rejoiner:
    """Joined (join before the room's first message: it is checked against all of them)."""
    member = await join_member(url, room, name)
    assert member.reader is not None
    member.reader.cancel()  # the rejoiner reads instead, to see the answers to its frames
    await asyncio.gather(member.reader, return_exceptions=True)
    member.closed = False
    churner = Rejoiner(member)
    member.reader = asyncio.create_task(churner.read())
    return churner


async def rejoiners(urls: list[str], rooms: list[str], per_room: int) -> list[Rejoiner]:
    """``per_room`` rejoiners in each room, spread over ``urls``."""
    every = rooms * per_room
    return [
        await rejoiner(urls[i % len(urls)], room, f"{room}-rejoiner-{i}")
        for i, room in enumerate(every)
    ]


def explain_duplicates(churners: list[Rejoiner]) -> dict[str, list[tuple[str, Event]]]:
    short = ("type", "offset", "recovered", "code", "since")
    return {
        c.member.name: [(d, {k: v for k, v in e.items() if k in short}) for d, e in trace]
        for c in churners
        if (trace := c.around_duplicate())
    }


@asynccontextmanager
async def churning(churners: list[Rejoiner]) -> AsyncIterator[None]:
    """Every rejoiner leaving and rejoining inside the block; each back in its room after it."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(c.churn(stop)) for c in churners]
    try:
        yield
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)


async def checked_with_rejoiners(
    traffic: Traffic, poster: Poster, admin: Admin, churners: list[Rejoiner], what: str
) -> None:
    """``checked_after`` (the rejoiners among the members of ``traffic``), and every rejoin
    recovered what it missed."""
    try:
        await checked_after(traffic, poster, admin, what)
    except AssertionError:
        print(explain_duplicates(churners))
        raise
    rejoins = [j for c in churners for j in c.rejoins]
    refusals = sum(len(c.refused) for c in churners)
    print(f"{len(rejoins)} rejoins, {refusals} refused and sent again")
    not_recovered = [j for j in rejoins if j.get("recovered") is not True]
    assert rejoins and not not_recovered, not_recovered[:3]


async def churned_through(
    cluster: LocalCluster, rooms: list[str], fault: ChurnFault, what: str
) -> Traffic:
    """3 rejoiners per room churning while ``fault`` runs under traffic on every path, then
    until 10 more acknowledgements; the guarantee checked (``checked_with_rejoiners``)."""
    churners = await rejoiners([node.url for node in cluster.nodes], rooms, per_room=3)
    traffic, poster = await on_every_path(cluster, rooms)
    traffic.members.extend(c.member for c in churners)
    admin = redis.Redis(port=cluster.redis_port)
    try:
        await traffic.more_acks(5)
        async with churning(churners):
            await fault(traffic)
            await traffic.more_acks(10, timeout=30)
        await checked_with_rejoiners(traffic, poster, admin, churners, what)
        return traffic
    finally:
        admin.close()
        await poster.close()
        await traffic.close()
