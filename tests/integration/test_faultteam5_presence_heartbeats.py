"""Every node's presence heartbeat refused for longer than ``ROOMCAST_PRESENCE_TTL``: Redis over
``maxmemory`` with ``noeviction`` refuses the heartbeat's write (``ZADD``) of every node alike.
Once memory is freed, no live node may be taken for dead: the first node to beat again used to
find every other node's heartbeat stale and reap them, and each member was told that the
members of the other nodes left, then (once those nodes saw they were reaped) joined again.
"""

from __future__ import annotations

import json
from functools import partial
from typing import cast

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster

from tests.support.cluster import QUICK_ENV, until
from tests.support.delivery import in_thread
from tests.support.presence_told import presence_until
from tests.support.wsclient import Client

pytestmark = pytest.mark.integration

ROOM = "lobby"
PRESENCE_TTL = 1.5
ENV = dict(QUICK_ENV, ROOMCAST_PRESENCE_TTL=str(PRESENCE_TTL))
FAILED_BEATS = 5  # at one beat every TTL / 3: 2.5 s, past the TTL and the reaper's third


def heartbeats_after(admin: redis.Redis, since_ms: int) -> bool:
    """Every node beat more than one TTL after ``since_ms``: a reaper has run meanwhile."""
    raw = admin.zrange("rc:nodes", 0, -1, withscores=True)
    scores = [score for _, score in cast(list[tuple[bytes, float]], raw)]
    wanted = since_ms + PRESENCE_TTL * 1000
    return len(scores) == 3 and all(score > wanted for score in scores)


async def test_heartbeats_refused_everywhere_reap_no_live_node() -> None:
    with LocalCluster(3, nginx=False, node_env=ENV) as cluster:
        admin = redis.Redis(port=cluster.redis_port)
        watchers = [await Client.connect(node.url) for node in cluster.nodes]
        try:
            for index, watcher in enumerate(watchers):
                await watcher.join(ROOM, f"member{index}")
            used = int((await in_thread(partial(admin.info, "memory")))["used_memory"])
            await in_thread(partial(admin.config_set, "maxmemory-policy", "noeviction"))
            # Far below what it uses (its own buffers come and go): every write refused.
            await in_thread(partial(admin.config_set, "maxmemory", str(used // 2)))
            for node in cluster.nodes:
                failures = [0]

                def failed(line: str, count: list[int] = failures) -> bool:
                    count[0] += "presence heartbeat failed" in line
                    return count[0] >= FAILED_BEATS

                await in_thread(partial(node.process.wait_for_line, failed, 20))
            await in_thread(partial(admin.config_set, "maxmemory", "256mb"))
            await in_thread(partial(admin.config_set, "maxmemory-policy", "volatile-ttl"))
            freed_ms = int((await in_thread(admin.time))[0]) * 1000
            await until(partial(heartbeats_after, admin, freed_ms), 20, "heartbeats")
            # Everything the room was told since comes before this message, on every node.
            await watchers[0].send(type="message", room=ROOM, text="still here", id="mark")
            told = await presence_until(watchers, "still here")
            print(
                f"\nheartbeats refused {FAILED_BEATS} times on every node (TTL "
                f"{PRESENCE_TTL} s), then memory freed: presence events to each member "
                f"{json.dumps([[(e['type'], e['username']) for e in t] for t in told])}"
            )
            # (The user_joined of members who joined after a watcher are the set-up's.)
            left = [[e["username"] for e in t if e["type"] == "user_left"] for t in told]
            assert left == [[], [], []], told
        finally:
            for watcher in watchers:
                await watcher.close()
            admin.close()
