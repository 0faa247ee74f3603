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

from collections.abc import Iterator
from functools import partial

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster

from tests.support.cluster import QUICK_ENV, ready, until
from tests.support.debug_redis import debuggable_redis_server
from tests.support.delivery import in_thread
from tests.support.posts import checked_after, on_every_path

pytestmark = pytest.mark.integration

ROOMS = ["busy-east", "busy-west"]
SLEEP_S = 4  # QUICK_ENV: the nodes give up on a silent Redis after 1 s


@pytest.fixture
def debuggable_redis() -> Iterator[int]:
    with debuggable_redis_server() as port:
        yield port


async def test_redis_busy_past_the_timeouts_loses_nothing_acknowledged_on_any_path(
    debuggable_redis: int,
) -> None:
    env = dict(QUICK_ENV, ROOMCAST_REDIS_URL=f"redis://127.0.0.1:{debuggable_redis}")
    admin = redis.Redis(port=debuggable_redis, socket_timeout=SLEEP_S * 10)
    with LocalCluster(3, redis=False, node_env=env) as cluster:
        traffic, poster = await on_every_path(cluster, ROOMS)
        try:
            await traffic.more_acks(5)
            await in_thread(partial(admin.execute_command, "DEBUG", "SLEEP", str(SLEEP_S)))
            for node in cluster.nodes:
                await until(partial(ready, node), 20, f"{node.node_id} ready again")
            await traffic.more_acks(20, timeout=40)
            held_up = sum(len(s.refused) + len(s.unconfirmed) for s in traffic.senders)
            await checked_after(traffic, poster, admin, f"DEBUG SLEEP {SLEEP_S} s")
            assert held_up or poster.statuses() != [201], "the sleep held nothing up"
        finally:
            await poster.close()
            await traffic.close()
            admin.close()
