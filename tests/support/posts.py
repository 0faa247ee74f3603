"""HTTP posts at a steady pace beside WebSocket traffic, and what posters, members and the room's
history were told, checked against each other by position (epoch, offset)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field

import redis
from redis.cluster import RedisCluster
from roomcast_dev.devcluster import LocalCluster

from roomcast.broker import scripts
from tests.support.delivery import Member, Position, Traffic
from tests.support.event_streams import follow_stream
from tests.support.httpclient import request

POST_INTERVAL_S = 0.05
# Reads the rooms' keys: a standalone or Sentinel primary, or a Redis Cluster.
Admin = redis.Redis | RedisCluster


@dataclass
class Poster:
    """HTTP posts to every node in turn, at a steady pace, each answer kept with its text."""

    ports: list[int]
    rooms: list[str]
    answers: list[tuple[str, str, int, dict[str, object]]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] = field(init=False)

    def __post_init__(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def close(self) -> None:
        self.stop.set()
        await asyncio.gather(self.task, return_exceptions=True)

    async def _run(self) -> None:
        serial = 0
        while not self.stop.is_set():
            serial += 1
            port = self.ports[serial % len(self.ports)]
            room = self.rooms[serial % len(self.rooms)]
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

    def statuses(self) -> list[int]:
        return sorted({status for _, _, status, _ in self.answers})

    def missing(self, traffic: Traffic) -> list[str]:
        """Members that neither got an accepted post nor were told they will not."""
        return [
            member.name
            for member in traffic.members
            for position in self.accepted(member.room)
            if position not in member.seen()
            and not member.covered(position, traffic.first_seen(member.room, position))
        ]

    def check(self, held: dict[str, dict[str, Position]], epochs: dict[str, str]) -> None:
        """Each answer against the history ``held`` now (room -> text -> position): a 201 at
        its position (or gone: from an epoch the room left, or older than history keeps), a
        503 never published, anything else 504 ``unconfirmed``. ``epochs``: each room's epoch
        now."""
        for room, text, status, body in self.answers:
            if status == 201:
                position = (str(body["epoch"]), int(str(body["offset"])))
                oldest = min((o for e, o in held[room].values() if e == position[0]), default=0)
                trimmed = position[1] < oldest  # history keeps the room's last messages only
                if (position[0] == epochs[room] and not trimmed) or text in held[room]:
                    assert held[room].get(text) == position, (text, body, held[room].get(text))
            elif status == 503:
                assert text not in held[room], f"{text} refused 503, yet published"
            else:
                assert (status, body["code"]) == (504, "unconfirmed"), (status, body)


def history(admin: Admin, room: str) -> dict[str, Position]:
    """Text -> position of every message the room's history holds."""
    raw = admin.lrange(scripts.room_keys(room)[2], 0, -1)
    return {entry["text"]: (entry["epoch"], entry["offset"]) for entry in map(json.loads, raw)}


def epoch(admin: Admin, room: str) -> str:
    raw = admin.get(scripts.room_keys(room)[1])
    return raw.decode() if isinstance(raw, bytes) else ""


def history_disagreements(members: list[Member], held: dict[str, dict[str, Position]]) -> list[str]:
    """Where history holds a message at another position than a member was sent it, or another
    message at a position a member was sent: history rewritten under what was delivered."""
    wrong = []
    for member in members:
        by_position = {position: text for text, position in held[member.room].items()}
        for epoch, offset, text in member.messages:
            kept = held[member.room].get(text)
            if kept is not None and kept != (epoch, offset):
                wrong.append(f"{member.name}: {text!r} at {epoch}/{offset}, history {kept}")
            other = by_position.get((epoch, offset))
            if other is not None and other != text:
                wrong.append(f"{member.name}: {text!r} at {epoch}/{offset}, history {other!r}")
    return wrong


async def on_every_path(cluster: LocalCluster, rooms: list[str]) -> tuple[Traffic, Poster]:
    """Each room followed by an event stream on each node and through nginx, WebSocket traffic
    through nginx and HTTP posts to each node and to nginx: the streams are members of the
    traffic."""
    ports = [node.port for node in cluster.nodes] + [cluster.nginx_port]
    followers = [await follow_stream(p, room, f"{room}-sse-{p}") for room in rooms for p in ports]
    traffic = await Traffic.start(cluster.url, rooms)
    traffic.members.extend(f.member for f in followers)
    return traffic, Poster(ports, rooms)


async def checked_after(traffic: Traffic, poster: Poster, admin: Admin, what: str) -> None:
    """The fault is over: stop traffic and posts, wait until every member has every message
    acknowledged either way or was told, then check the guarantee over members, posters and
    the history ``admin`` (the rooms' Redis now) holds."""
    poster.stop.set()
    await poster.task
    await traffic.finish(timeout=30)
    await traffic.until(lambda: not poster.missing(traffic), 30, "every accepted post")
    print(
        f"\n{what}: {traffic.summary()}; {len(poster.answers)} posts, statuses "
        f"{poster.statuses()}, {sum(len(poster.accepted(r)) for r in poster.rooms)} accepted"
    )
    traffic.check()
    held = {room: await asyncio.to_thread(history, admin, room) for room in poster.rooms}
    epochs = {room: await asyncio.to_thread(epoch, admin, room) for room in poster.rooms}
    poster.check(held, epochs)
    refused = {s.texts[i] for s in traffic.senders for i in s.refused}
    assert not refused & set().union(*(set(h) for h in held.values())), "refused, yet kept"
    wrong = history_disagreements(traffic.members, held)
    assert not wrong, wrong[:5]
