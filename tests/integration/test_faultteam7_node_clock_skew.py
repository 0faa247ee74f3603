"""A node whose wall clock is a minute off (behind, or ahead) beside a node whose clock is right:
presence heartbeats must not make either take the other for dead. A live node's members reaped
are told to every member of their rooms as ``user_left`` while they are connected, and vanish
from presence; then their node sees it was reaped and announces them again: over and over,
once per heartbeat, for as long as the clocks disagree.
"""

from __future__ import annotations

import json
import os
from functools import partial

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster

from tests.support.cluster import QUICK_ENV, http_get, ready, until
from tests.support.delivery import in_thread
from tests.support.paths import REPO
from tests.support.wsclient import Client, Event, scaled

pytestmark = pytest.mark.integration

ROOM = "lobby"
PRESENCE_TTL = 1.5
ENV = dict(QUICK_ENV, ROOMCAST_PRESENCE_TTL=str(PRESENCE_TTL))
SKEWED_CLOCK = REPO / "tests" / "support" / "skewed_clock"
BEATS = 8  # of the skewed node, at one every TTL / 3: past a TTL and two reaper rounds


def skewed_env(seconds: float) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(SKEWED_CLOCK), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, "FAULT_CLOCK_SKEW_S": str(seconds)}


class BeatCounter:
    """Counts the heartbeats of one node seen in ``rc:nodes`` (each writes a new score)."""

    def __init__(self, admin: redis.Redis, instance: bytes) -> None:
        self.admin, self.instance = admin, instance
        self.scores: set[float] = set()

    def beaten(self, count: int) -> bool:
        score = self.admin.zscore("rc:nodes", self.instance)
        if score is not None:
            self.scores.add(score)
        return len(self.scores) >= count


@pytest.mark.parametrize("skew", [-60.0, 60.0])
async def test_a_node_with_a_wrong_clock_is_not_taken_for_dead(skew: float) -> None:
    with LocalCluster(1, nginx=False, node_env=ENV) as cluster:
        admin = redis.Redis(port=cluster.redis_port)
        right = cluster.nodes[0]
        wrong = await in_thread(partial(cluster.start_node, skewed_env(skew)))
        for node in cluster.nodes:
            await until(partial(ready, node), 20, f"{node.node_id} ready")
        alice = await Client.connect(right.url)
        bob = await Client.connect(wrong.url)
        try:
            await alice.join(ROOM, "alice")
            await bob.join(ROOM, "bob")
            await alice.recv_type("user_joined", username="bob")
            before = set(await in_thread(partial(admin.zrange, "rc:nodes", 0, -1)))
            assert len(before) == 2, before
            counters = [BeatCounter(admin, instance) for instance in before]
            await until(lambda: all(c.beaten(BEATS) for c in counters), 30, "heartbeats")

            # Everything the room was told since comes before this message, on both nodes.
            await bob.send(type="message", room=ROOM, text="still here", id="mark")
            told: list[list[Event]] = []
            for watcher in (alice, bob):
                events: list[Event] = []

                def mark(event: Event, into: list[Event] = events) -> bool:
                    into.append(event)
                    return event["type"] == "message" and event.get("text") == "still here"

                await watcher.recv_where(mark, timeout=scaled(10))
                told.append([e for e in events if e["type"] in ("user_left", "user_joined")])
            status, body = await in_thread(
                partial(http_get, f"http://127.0.0.1:{right.port}/api/rooms/{ROOM}/presence")
            )
            print(
                f"\none node's clock {skew:+.0f} s off, {BEATS} heartbeats each (TTL "
                f"{PRESENCE_TTL} s): presence events to alice and bob "
                f"{json.dumps([[(e['type'], e['username']) for e in t] for t in told])}"
            )
            assert told == [[], []], told
            assert status == 200 and {m["username"] for m in json.loads(body)["members"]} == {
                "alice",
                "bob",
            }, body
        finally:
            await alice.close()
            await bob.close()
            admin.close()
