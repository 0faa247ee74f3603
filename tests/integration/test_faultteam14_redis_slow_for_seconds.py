"""Sustained slowness rather than one stall: Redis busy in ``DEBUG SLEEP 0.3`` every 0.5 s for
10 s (each command of every node waits up to 0.3 s, below the nodes' 1 s Redis timeout, so the
nodes never see Redis down), under WebSocket traffic, event streams and HTTP posts on every
path, while clients keep joining a room on every node and some leave or hang up again.

The promise, checked by offset over every member and stream: every send and every join is
answered (none hangs); each acknowledged message reaches every member once and in order, or the
member is told (a ``loss``); nothing refused is published. Afterwards presence is exact on every
node: the members still joined, no one who left or hung up, no one whose join was refused.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster

from tests.support.cluster import QUICK_ENV
from tests.support.debug_redis import debuggable_redis_server
from tests.support.posts import checked_after, on_every_path
from tests.support.wsclient import Client, Event, scaled

pytestmark = pytest.mark.integration

ROOMS = ["slow-east", "slow-west"]
JOIN_ROOM = "slow-joins"
SLOW_FOR_S = 10.0
SLEEP_S = 0.3
EVERY_S = 0.5


@pytest.fixture
def debuggable_redis() -> Iterator[int]:
    with debuggable_redis_server() as port:
        yield port


def keep_redis_slow(port: int) -> int:
    """``DEBUG SLEEP`` every ``EVERY_S`` for ``SLOW_FOR_S``: how many sleeps ran."""
    admin = redis.Redis(port=port, socket_timeout=10)
    sleeps = 0
    deadline = time.monotonic() + SLOW_FOR_S
    try:
        while time.monotonic() < deadline:
            admin.execute_command("DEBUG", "SLEEP", str(SLEEP_S))  # type: ignore[no-untyped-call]
            sleeps += 1
            time.sleep(EVERY_S - SLEEP_S)  # the fault's own pace, not a wait for an outcome
    finally:
        admin.close()
    return sleeps


class Joiners:
    """Clients joining ``JOIN_ROOM`` one after another, round-robin over the nodes; every fourth
    one leaves again and every seventh hangs up, each answer awaited (a hanging join fails)."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.joined: dict[str, Client] = {}  # still in the room
        self.refused: list[Event] = []
        self.gone: list[str] = []

    async def run(self, stop: threading.Event) -> None:
        serial = 0
        while not stop.is_set():
            serial += 1
            name = f"joiner{serial}"
            client = await Client.connect(self.urls[serial % len(self.urls)])
            await client.send(type="join", room=JOIN_ROOM, username=name, id=name)

            def answer(event: Event, name: str = name) -> bool:
                return event["type"] == "joined" or (
                    event["type"] == "error" and event.get("id") == name
                )

            event = await client.recv_where(answer, timeout=10)
            if event["type"] == "error":
                self.refused.append(event)
                await client.close()
            elif serial % 4 == 0:
                await client.send(type="leave", room=JOIN_ROOM)
                await client.recv_type("left", timeout=10, room=JOIN_ROOM)
                self.gone.append(name)
                await client.close()
            elif serial % 7 == 0:
                await client.close()
                self.gone.append(name)
            else:
                self.joined[name] = client

    async def presence(self, node: str) -> list[str]:
        """The room's presence as a member on ``node`` is told it (non-members are refused)."""
        asker = next(client for client in self.joined.values() if client.node == node)
        await asker.send(type="presence", room=JOIN_ROOM)
        answer = await asker.recv_type("presence", room=JOIN_ROOM)
        return sorted(member["username"] for member in answer["members"])

    async def close(self) -> None:
        for client in self.joined.values():
            await client.close()


async def presence_settles(joiners: Joiners, nodes: list[str]) -> list[list[str]]:
    """Each node's presence once they all name exactly the members still joined, or, past the
    deadline, as they last were (hang-ups are told to Redis as their sockets close)."""
    wanted = sorted(joiners.joined)
    deadline = time.monotonic() + scaled(10)
    while True:
        seen = [await joiners.presence(node) for node in nodes]
        if all(names == wanted for names in seen) or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.2)  # polling a query: nothing pushes "presence settled"


async def test_redis_slow_for_seconds_answers_everything_loses_nothing(
    debuggable_redis: int,
) -> None:
    env = dict(QUICK_ENV, ROOMCAST_REDIS_URL=f"redis://127.0.0.1:{debuggable_redis}")
    admin = redis.Redis(port=debuggable_redis, socket_timeout=10)
    with LocalCluster(3, redis=False, node_env=env) as cluster:
        traffic, poster = await on_every_path(cluster, ROOMS)
        joiners = Joiners([node.url for node in cluster.nodes])
        stop_joining = threading.Event()
        joining = asyncio.create_task(joiners.run(stop_joining))
        try:
            await traffic.more_acks(5)
            acks_before = traffic.acks()
            sleeps = await asyncio.to_thread(keep_redis_slow, debuggable_redis)
            stop_joining.set()
            await joining
            acked_while_slow = traffic.acks() - acks_before
            await checked_after(traffic, poster, admin, f"{sleeps} x DEBUG SLEEP {SLEEP_S} s")
            seen = await presence_settles(joiners, [node.node_id for node in cluster.nodes])
            print(
                f"while slow: {acked_while_slow} acks; joins: {len(joiners.joined)} still in, "
                f"{len(joiners.gone)} left or hung up, {len(joiners.refused)} refused"
            )
            assert acked_while_slow > 0, "nothing was acknowledged while Redis was slow"
            wanted = sorted(joiners.joined)
            assert all(names == wanted for names in seen), (wanted, seen)
        finally:
            stop_joining.set()
            if not joining.done():
                joining.cancel()
            await joiners.close()
            await poster.close()
            await traffic.close()
            admin.close()
