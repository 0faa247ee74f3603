"""Slow rather than dead: Redis busy in one command (``DEBUG SLEEP``, as a long ``KEYS``, a big
``DEL`` or a slow Lua script would hold it) for four times the nodes' Redis timeout, under
WebSocket traffic, event streams on every node and HTTP posts to every node at once.

Unlike a stopped process, Redis keeps its sockets and reads everything sent meanwhile once the
command ends, so each message the nodes gave up on may yet run. The promise, checked by offset
over every WebSocket member and every stream: each acknowledged message (a WebSocket ``ack`` or a
post's 201) reaches every member once and in order or the member is told (a ``loss``); nothing
refused (an ``error``, a post's 503) is ever published; a post's 201 names the offset history
holds its text at.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster, ManagedProcess, find_binary, free_port

from roomcast.broker import scripts
from tests.support.cluster import QUICK_ENV, ready, until
from tests.support.delivery import Position, Traffic, in_thread
from tests.support.event_streams import follow_stream
from tests.support.httpclient import request

pytestmark = pytest.mark.integration

ROOMS = ["busy-east", "busy-west"]
SLEEP_S = 4  # QUICK_ENV: the nodes give up on a silent Redis after 1 s
POST_INTERVAL_S = 0.05


@pytest.fixture
async def debuggable_redis() -> AsyncIterator[int]:
    """A standalone redis-server that accepts ``DEBUG`` (off by default since Redis 7)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="roomcast-debug-sleep-") as workdir:
        argv = [find_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(Path(workdir))]
        process = ManagedProcess("redis", [*argv, "--enable-debug-command", "yes"])
        try:
            process.wait_for_line(lambda line: "Ready to accept connections" in line, 20)
            yield port
        finally:
            process.stop()


@dataclass
class Poster:
    """HTTP posts to every node in turn, at a steady pace, each answer kept with its text."""

    ports: list[int]
    answers: list[tuple[str, str, int, dict[str, object]]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        serial = 0
        while not self.stop.is_set():
            serial += 1
            port = self.ports[serial % len(self.ports)]
            room = ROOMS[serial % len(ROOMS)]
            text = f"posted-{serial}"
            url = f"http://127.0.0.1:{port}/api/rooms/{room}/messages"
            answer = await request(
                "POST", url, json_body={"text": text, "username": "backend"}, timeout=30
            )
            self.answers.append((room, text, answer.status, json.loads(answer.body)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), POST_INTERVAL_S)

    def accepted(self, room: str) -> dict[Position, str]:
        return {
            (str(body["epoch"]), int(str(body["offset"]))): text
            for posted_in, text, status, body in self.answers
            if posted_in == room and status == 201
        }


def history(admin: redis.Redis, room: str) -> dict[str, int]:
    """Text -> offset of every message the room's history holds."""
    raw = admin.lrange(scripts.room_keys(room)[2], 0, -1)
    return {entry["text"]: entry["offset"] for entry in map(json.loads, raw)}


async def test_redis_busy_past_the_timeouts_loses_nothing_acknowledged_on_any_path(
    debuggable_redis: int,
) -> None:
    env = dict(QUICK_ENV, ROOMCAST_REDIS_URL=f"redis://127.0.0.1:{debuggable_redis}")
    admin = redis.Redis(port=debuggable_redis, socket_timeout=SLEEP_S * 10)
    with LocalCluster(3, redis=False, node_env=env) as cluster:
        ports = [node.port for node in cluster.nodes]
        followers = [
            await follow_stream(p, room, f"{room}-sse-{p}") for room in ROOMS for p in ports
        ]
        traffic = await Traffic.start(cluster.url, ROOMS)
        traffic.members.extend(f.member for f in followers)
        poster = Poster(ports)
        posting = asyncio.create_task(poster.run())
        try:
            await traffic.more_acks(5)
            await in_thread(partial(admin.execute_command, "DEBUG", "SLEEP", str(SLEEP_S)))
            for node in cluster.nodes:
                await until(partial(ready, node), 20, f"{node.node_id} ready again")
            await traffic.more_acks(20, timeout=40)
            poster.stop.set()
            await posting
            await traffic.finish(timeout=30)
            accepted = {room: poster.accepted(room) for room in ROOMS}

            def posts_missing() -> list[str]:
                return [
                    member.name
                    for member in traffic.members
                    for position in accepted[member.room]
                    if position not in member.seen()
                    and not member.covered(position, traffic.first_seen(member.room, position))
                ]

            await traffic.until(lambda: not posts_missing(), 30, "every accepted post")
            statuses = sorted({status for _, _, status, _ in poster.answers})
            print(
                f"\nDEBUG SLEEP {SLEEP_S} s: {traffic.summary()}; "
                f"{len(poster.answers)} posts, statuses {statuses}, "
                f"{sum(len(a) for a in accepted.values())} accepted"
            )
            traffic.check()
            answered_otherwise = sum(len(s.refused) + len(s.unconfirmed) for s in traffic.senders)
            assert answered_otherwise or statuses != [201], "the sleep held nothing up"
            held = {room: await in_thread(partial(history, admin, room)) for room in ROOMS}
            for room, text, status, body in poster.answers:
                if status == 201:
                    assert held[room].get(text) == body["offset"], (text, body)
                elif status == 503:
                    assert text not in held[room], f"{text} refused 503, yet published"
                else:
                    assert (status, body["code"]) == (504, "unconfirmed"), (status, body)
            refused = {s.texts[i] for s in traffic.senders for i in s.refused}
            assert not refused & set().union(*(set(h) for h in held.values()))
        finally:
            poster.stop.set()
            await asyncio.gather(posting, return_exceptions=True)
            await traffic.close()
            admin.close()
