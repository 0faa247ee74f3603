"""Event streams (SSE) followed as a browser's EventSource follows them, recorded as members of
``tests.support.delivery.Traffic``: every event a stream is sent goes through ``Member.record``,
so the delivery guarantee is checked over streams and WebSocket members alike.

When a stream ends (a draining node, a catch-up that lost its room's epoch, a proxy restart),
the follower opens it again with ``Last-Event-ID`` = the last id it was sent, as EventSource
does. A resume answered ``recovered: false`` is how a stream is told what it missed: it is
recorded as the ``loss`` events it stands for (the rest of the old epoch, and the new epoch's
offsets up to where the stream starts again), so that ``Traffic.check`` excuses exactly those.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import cast

from websockets.asyncio.client import ClientConnection

from tests.adversarial.httpraw import EventStreamReader
from tests.support.delivery import Event, Fault, Member, Traffic
from tests.support.wsclient import scaled

__all__ = ["StreamFollower", "follow_stream", "run_through"]

# A resume refused while Redis is away (503) is tried again after this, as EventSource does
# after its ``retry`` (a client's pace, not a wait for an event).
RETRY_SECONDS = 0.1


@dataclass
class StreamFollower:
    """One stream of one room, opened on one port again and again until closed."""

    port: int
    room: str
    member: Member
    opened: list[Event] = field(default_factory=list)  # each (re)opening's ``joined``
    refusals: int = 0  # resumes answered other than 200
    _stream: EventStreamReader | None = None
    _stopped: bool = False

    async def close(self) -> None:
        """What ``Traffic.close`` calls as a WebSocket's ``close``."""
        self._stopped = True
        if self._stream is not None:
            self._stream.close()

    async def run(self) -> None:
        try:
            while not self._stopped:
                await self._follow_once()
        finally:
            self.member.closed = True
            self.member.changed.set()

    async def _follow_once(self) -> None:
        last_id = None if self._stream is None else self._stream.last_event_id
        headers = [] if last_id is None else [("Last-Event-ID", last_id)]
        try:
            stream = await EventStreamReader.open(
                self.port, f"/api/rooms/{self.room}/events", headers
            )
        except OSError:
            await asyncio.sleep(RETRY_SECONDS)
            return
        if stream.status != 200:
            stream.close()
            self.refusals += 1
            await asyncio.sleep(RETRY_SECONDS)
            return
        stream.last_event_id = last_id
        self._stream = stream
        with contextlib.suppress(EOFError, OSError, TimeoutError):
            joined = await stream.next_event(timeout=30)
            self.opened.append(joined)
            self.member.changed.set()
            if joined.get("recovered") is False and last_id is not None:
                self._told_lost(last_id, joined)
            while not self._stopped:
                self.member.record(await stream.next_event(timeout=3600))
        stream.close()

    def _told_lost(self, last_id: str, joined: Event) -> None:
        epoch, _, offset = last_id.rpartition(":")
        last = int(offset)
        if joined["epoch"] == epoch:
            lost = self._loss(joined["reason"], epoch, last + 1, joined["offset"])
            self.member.record(lost)
            return
        rest = self._loss("epoch_changed", epoch, last + 1, None)
        rest["new_epoch"] = joined["epoch"]
        self.member.record(rest)
        if joined["offset"] > 0:
            self.member.record(self._loss("epoch_changed", joined["epoch"], 1, joined["offset"]))

    def _loss(self, reason: str, epoch: str, first: int, to: int | None) -> Event:
        return {
            "type": "loss",
            "room": self.room,
            "reason": reason,
            "epoch": epoch,
            "from_offset": first,
            "to_offset": to,
        }


async def follow_stream(port: int, room: str, name: str) -> StreamFollower:
    """A stream of ``room`` on the node at ``port``, open (its ``joined`` read) on return."""
    member = Member(name, room, cast(ClientConnection, None), node=str(port))
    follower = StreamFollower(port, room, member)
    # A member's ``ws`` is only closed (by Traffic.close): the follower stands in for it.
    member.ws = cast(ClientConnection, follower)
    member.reader = asyncio.create_task(follower.run())
    while not follower.opened:
        member.changed.clear()
        if follower.opened or member.closed:
            break
        await asyncio.wait_for(member.changed.wait(), scaled(30))
    return follower


async def run_through(
    traffic: Traffic, followers: list[StreamFollower], fault: Fault, what: str
) -> None:
    """Traffic, ``fault``, more traffic; then the guarantee checked over every member of
    ``traffic`` and every stream (added to its members here), and both closed."""
    traffic.members.extend(f.member for f in followers)
    try:
        await traffic.more_acks(5)
        await fault()
        await traffic.more_acks(20, timeout=40)
        await _finish(traffic, followers)
        print(f"\n{what}: {traffic.summary()}; {_report(followers)}")
        traffic.check()
    finally:
        await traffic.close()


async def _finish(traffic: Traffic, followers: list[StreamFollower]) -> None:
    """``Traffic.finish``; on a timeout, what each stream still missing a message was told."""
    try:
        await traffic.finish(timeout=30)
    except TimeoutError:
        missing = traffic.missing()
        detail = {
            f.member.name: (f.opened, f.member.losses, f.refusals, f.member.messages[-3:])
            for f in followers
            if f.member.name in missing
        }
        brief = {name: (len(p), p[:3], p[-3:]) for name, p in missing.items()}
        losses = {m.name: m.losses for m in traffic.members if m.losses}
        raise AssertionError(f"missing {brief}; streams {detail}; losses {losses}") from None


def _report(followers: list[StreamFollower]) -> str:
    resumed = sum(len(f.opened) - 1 for f in followers)
    told = sum(1 for f in followers for o in f.opened if o.get("recovered") is False)
    losses = sum(len(f.member.losses) for f in followers)
    return f"{len(followers)} streams: {resumed} resumes ({told} not recovered), {losses} losses"
