"""Two faults close together, seen by the Python client (``roomcast.client``): Redis restarted
empty, then the client's node stops (SIGSTOP, then SIGKILL: a VM paused, then lost) before the
room's new epoch has sent it anything, while messages are acknowledged in that epoch on another
node. The client reconnects through nginx to a surviving node and rejoins.

Right after the restart the node's gap filler tells its members ``loss`` ``epoch_changed`` with
``new_epoch`` null (the room has no message in its new epoch yet). The client must still rejoin
with ``since``: a plain join's ``joined`` says nothing of what the new epoch got meanwhile.
Before, the client forgot its position on that notice, rejoined plainly, and the 6 messages
acknowledged in the new epoch while it was away were neither delivered nor covered by a ``Gap``.
Now the rejoin resumes from the old epoch, and the server's ``recovered: false`` is a ``Gap``
naming the new epoch's offsets it missed.
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass, field
from functools import partial

import pytest
from roomcast_dev.devcluster import LocalCluster

from roomcast.client import ChatMessage, Gap, Joined, RoomcastClient
from tests.support.cluster import QUICK_ENV, ready, until
from tests.support.delivery import Member, in_thread, join_member
from tests.support.python_clients import Follower, until_true
from tests.support.wsclient import scaled

pytestmark = pytest.mark.integration

ROOM = "restarted"
AWAY = 6  # messages acknowledged in the new epoch while the client is away


@dataclass
class Reader(Follower):
    """A follower that also keeps its ``joined`` events (its rejoins)."""

    joins: list[Joined] = field(default_factory=list)

    async def read(self) -> None:
        async for event in self.client:
            if isinstance(event, Joined) and event.room == self.room:
                self.joins.append(event)
            elif isinstance(event, ChatMessage | Gap) and event.room == self.room:
                self.events.append(event)
            self.changed.set()


async def follow(url: str) -> Reader:
    client = RoomcastClient(url, "reader", confirm_timeout=scaled(30))
    await client.__aenter__()
    await client.join(ROOM)
    reader = Reader(client, ROOM)
    reader.task = asyncio.create_task(reader.read())
    return reader


def texts(follower: Follower) -> list[str]:
    return [e.text for e in follower.events if isinstance(e, ChatMessage)]


async def acknowledged(sender: Member, label: str, count: int) -> None:
    """``count`` more of the sender's messages acknowledged, one at a time (those refused while
    its node reconnects to the restarted Redis are sent again)."""
    wanted = len(sender.acked) + count
    attempt = 0
    while len(sender.acked) < wanted:
        attempt += 1
        request_id = f"{label}-{attempt}"
        await sender.send_message(request_id, f"text of {request_id}")
        async with asyncio.timeout(scaled(10)):
            while sender.pending:
                sender.changed.clear()
                if sender.pending:
                    await sender.changed.wait()


async def test_a_client_away_before_the_new_epochs_first_message_is_told_what_it_missed() -> None:
    with LocalCluster(3, node_env=QUICK_ENV) as cluster:
        for node in cluster.nodes:
            await until(partial(ready, node), 20, f"{node.node_id} ready")
        reader = await follow(cluster.url)
        try:
            victim = next(n for n in cluster.nodes if n.node_id == reader.client.node)
            other = next(n for n in cluster.nodes if n is not victim)
            sender = await join_member(other.url, ROOM, "sender")
            await acknowledged(sender, "before", 3)
            await until_true([reader], lambda: len(texts(reader)) >= 3, 20)

            await in_thread(cluster.kill_redis)
            await in_thread(cluster.start_redis)  # same port, nothing kept
            await until_true([reader], lambda: bool(reader.gaps()), 30)
            notice = reader.gaps()[0]
            # The scenario: told of the new epoch before it had any message.
            assert (notice.reason, notice.epoch) == ("epoch_changed", ""), notice

            victim.process.signal(signal.SIGSTOP)
            try:
                await until(partial(ready, other), 20, f"{other.node_id} ready")
                await acknowledged(sender, "away", AWAY)
            finally:
                victim.process.signal(signal.SIGKILL)
                await in_thread(partial(victim.process.popen.wait, 10))

            # The reader reconnects through nginx and rejoins; the sender's next message
            # reaches it once it is back.
            await until_true([reader], lambda: len(reader.joins) >= 2, 30)
            print(f"\nthe reader's rejoin: {reader.joins[-1]}")
            await acknowledged(sender, "back", 1)
            await until_true([reader], lambda: any("back" in t for t in texts(reader)), 30)
            acked = {position: sender.texts[i] for i, position in sender.acked.items()}
            gaps = [(g.reason, g.epoch, g.offset) for g in reader.gaps()]
            away = sorted(p for i, p in sender.acked.items() if i.startswith("away"))
            print(f"\nacknowledged while away: {away}; the reader's gaps: {gaps}")
            first_epoch = {e for i, (e, _) in sender.acked.items() if i.startswith("before")}
            assert len({epoch for epoch, _ in away} | first_epoch) == 2, "one new epoch"
            missing = reader.missing(acked)
            assert not missing, f"acknowledged, never delivered, no Gap: {missing}"
            delivered = reader.delivered()
            assert len(delivered) == len(set(delivered))
        finally:
            await reader.client.__aexit__(None, None, None)
            if reader.task is not None:
                reader.task.cancel()
