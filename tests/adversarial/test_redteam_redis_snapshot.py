"""Red team: Redis restarted on an older snapshot (its default persistence) must not reuse offsets.

An operator who keeps Redis's default persistence (RDB snapshots, `save 3600 1 300 100 60
10000`), or AOF with the default `appendfsync everysec`, gets back, after a crash, the data of
the last snapshot: each room's offset counter goes back, its epoch does not change. Chaos covers
a restart on `appendfsync always` (nothing lost) and one without persistence (new epochs), not
this one. docs/guarantees.md promises that an `ack` means every member gets the message once, in
order, or a `loss` naming what it lost, and that offsets are never handed out twice (clients
de-duplicate by `(epoch, offset)`). Here the messages acknowledged after the snapshot are gone
from Redis, nobody is told, and the next messages are acknowledged under the SAME epoch and
offsets as the lost ones: a member that already got those offsets drops the new messages as
duplicates (the node's gap filler does, or the client's de-duplication), or sees two texts at
one offset.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.adversarial.devcluster_shim import LocalCluster, scaled
from tests.adversarial.httpraw import http
from tests.adversarial.rawws import RawWebSocket
from tests.adversarial.readiness import until_ready

BEFORE_SNAPSHOT = 3
AFTER_SNAPSHOT = 5  # acknowledged, delivered live, then lost with the crash
AFTER_RESTART = 2


@pytest.fixture
def cluster() -> Iterator[Any]:
    with LocalCluster(1, nginx=False, node_env={"ROOMCAST_REDIS_TIMEOUT": "1"}) as running:
        yield running


async def _post(port: int, room: str, text: str) -> tuple[str, int]:
    answer = await http(
        port, "POST", f"/api/rooms/{room}/messages", json_body={"text": text, "username": "poster"}
    )
    assert answer.status == 201, answer
    posted = answer.json()
    return posted["epoch"], posted["offset"]


async def _redis_save(port: int) -> None:
    """SAVE: what Redis's `save` schedule does by itself (here at a known moment)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"SAVE\r\n")
        reply = await asyncio.wait_for(reader.readline(), scaled(10))
        assert reply == b"+OK\r\n", reply
    finally:
        writer.close()


async def test_redis_restarted_from_an_older_snapshot_never_reuses_an_offset(cluster: Any) -> None:
    node = cluster.nodes[0]
    await until_ready(node)
    room = f"snap-{uuid.uuid4().hex[:8]}"
    member = await RawWebSocket.connect("127.0.0.1", node.port)
    try:
        await member.send({"type": "join", "room": room, "username": "member"})
        await member.next_text(type="joined", room=room)
        acked: dict[tuple[str, int], str] = {}
        for index in range(BEFORE_SNAPSHOT):
            acked[await _post(node.port, room, f"kept {index}")] = f"kept {index}"
        await _redis_save(cluster.redis_port)
        for index in range(AFTER_SNAPSHOT):
            acked[await _post(node.port, room, f"lost {index}")] = f"lost {index}"
        await member.next_text(type="message", text=f"lost {AFTER_SNAPSHOT - 1}")

        cluster.kill_redis()  # a crash: Redis comes back with its last snapshot
        cluster.start_redis()
        await until_ready(node)
        reused: list[str] = []
        after: list[str] = []
        for index in range(AFTER_RESTART):
            text = f"after {index}"
            where = await _post(node.port, room, text)
            if where in acked:
                reused.append(f"{where} was {acked[where]!r}, now {text!r}")
            acked[where] = text
            after.append(text)
        delivered: list[str] = []
        for text in after:
            try:
                await member.next_text(timeout=3, type="message", text=text)
                delivered.append(text)
            except TimeoutError:
                pass
        losses = [e for e in member.received.texts if e.get("type") == "loss"]
    finally:
        await member.close()
    figures = (
        f"{BEFORE_SNAPSHOT} messages, SAVE, {AFTER_SNAPSHOT} more (all acked and delivered), "
        f"Redis SIGKILLed and restarted on its snapshot: acks reusing an offset: {reused}; "
        f"delivered to the member after the restart: {delivered} of {after}; loss notices: {losses}"
    )
    print(figures)
    assert not reused, figures
    assert delivered == after, figures
