"""The history window of docs/guarantees.md ("Tuning history (N and T)" and "What is
at-least-once, what is lost"), tried against a REAL redis-server and two node processes:

* a client can recover an outage only while the last message it missed is younger than
  ``ROOMCAST_HISTORY_TTL``; past it, its rejoin with ``since`` is told ``too_old``, never handed
  a silent gap;
* the room's offset counter and epoch outlive its history by a day, so an idle room whose
  history expired keeps its epoch and goes on from the next offset;
* ``typing``, ``user_joined`` and ``user_left`` are live-only: neither a rejoin with ``since``
  nor a ``history`` request hands them back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster

from roomcast.broker.scripts import room_keys
from tests.support.cluster import FAST_ENV, until
from tests.support.wsclient import Client, Event

pytestmark = pytest.mark.integration

HISTORY_TTL = 1  # seconds: the setting's minimum, so that the test waits for one expiry only
# What the room's counter and epoch are promised to outlive their last message by: a day.
A_DAY_NEARLY = 86_400 - 600


@pytest.fixture
def short_history() -> Iterator[tuple[LocalCluster, redis.Redis]]:
    """Two nodes whose rooms keep their history HISTORY_TTL seconds, and their Redis."""
    env = dict(FAST_ENV, ROOMCAST_HISTORY_TTL=str(HISTORY_TTL))
    with (
        LocalCluster(2, nginx=False, node_env=env) as running,
        redis.Redis(port=running.redis_port) as db,
    ):
        yield running, db


@pytest.fixture
def two_nodes() -> Iterator[LocalCluster]:
    with LocalCluster(2, nginx=False, node_env=FAST_ENV) as running:
        yield running


def new_room() -> str:
    return "window-" + uuid.uuid4().hex[:10]


async def rejoin(url: str, room: str, name: str, epoch: str, offset: int) -> tuple[Client, Event]:
    client = await Client.connect(url)
    await client.send(
        type="join", room=room, username=name, since={"epoch": epoch, "offset": offset}
    )
    return client, await client.recv_type("joined", room=room)


async def test_past_the_history_ttl_a_rejoin_is_told_too_old_and_the_epoch_stays(
    short_history: tuple[LocalCluster, redis.Redis],
) -> None:
    cluster, db = short_history
    room = new_room()
    seq_key, epoch_key, history_key, _ = room_keys(room)
    away = await Client.connect(cluster.nodes[0].url)
    sender = await Client.connect(cluster.nodes[1].url)
    try:
        await sender.join(room, "sender")
        await sender.send(type="message", text="before")
        seen = await sender.recv_type("message", text="before")
        joined = await away.join(room, "away")
        assert (joined["epoch"], joined["offset"]) == (seen["epoch"], seen["offset"])
        await away.close()
        for index in range(3):
            await sender.send(type="message", text=f"missed {index}")
        last = await sender.recv_type("message", text="missed 2")
        assert last["offset"] == seen["offset"] + 3
        # The counter and epoch are kept a day, the history only its ttl.
        assert int(db.ttl(seq_key)) > A_DAY_NEARLY and int(db.ttl(epoch_key)) > A_DAY_NEARLY
        assert int(db.ttl(history_key)) <= HISTORY_TTL  # (-2 once it expired)

        # Redis expires the history by itself: no event to await but its absence.
        await until(lambda: db.exists(history_key) == 0, 10 + HISTORY_TTL, "history expired")

        away, answer = await rejoin(
            cluster.nodes[0].url, room, "away", seen["epoch"], seen["offset"]
        )
        # Told, not handed a gap: too_old, in the same epoch, at the room's latest offset.
        assert (answer["recovered"], answer["reason"]) == (False, "too_old"), answer
        assert (answer["epoch"], answer["offset"]) == (seen["epoch"], last["offset"])
        # A client that had read everything has nothing to recover, history or not.
        current, up_to_date = await rejoin(
            cluster.nodes[1].url, room, "current", last["epoch"], last["offset"]
        )
        assert up_to_date["recovered"] is True, up_to_date
        await current.close()
        # The idle room goes on in its epoch, from the next offset: nothing handed out twice.
        await sender.send(type="message", text="after")
        after = await away.recv_type("message", text="after")
        assert (after["epoch"], after["offset"]) == (seen["epoch"], last["offset"] + 1)
        assert int(db.ttl(seq_key)) > A_DAY_NEARLY
    finally:
        await away.close()
        await sender.close()


async def test_live_only_events_are_never_handed_back(two_nodes: LocalCluster) -> None:
    room = new_room()
    away = await Client.connect(two_nodes.nodes[0].url)
    talker = await Client.connect(two_nodes.nodes[1].url)
    try:
        await talker.join(room, "talker")
        joined = await away.join(room, "away")
        await away.close()
        # What happens while "away" is gone: a join, a leave, typing, and one message.
        passer = await Client.connect(two_nodes.nodes[1].url)
        await passer.join(room, "passer")
        await talker.recv_type("user_joined", username="passer")
        await passer.send(type="typing")
        await talker.recv_type("typing", username="passer")
        await passer.close()
        await talker.recv_type("user_left", username="passer")
        await talker.send(type="message", text="kept")
        kept = await talker.recv_type("message", text="kept")

        away, answer = await rejoin(
            two_nodes.nodes[0].url, room, "away", joined["epoch"], joined["offset"]
        )
        assert answer["recovered"] is True, answer
        await talker.send(type="message", text="mark")
        handed = await away.events_until_message("mark")
        assert [(e["type"], e.get("text")) for e in handed] == [
            ("message", "kept"), ("message", "mark"),
        ]  # fmt: skip
        assert handed[0]["offset"] == kept["offset"]
        await away.send(type="history", limit=100)
        history = await away.recv_type("history")
        assert [m["text"] for m in history["messages"]] == ["kept", "mark"]
    finally:
        await away.close()
        await talker.close()
