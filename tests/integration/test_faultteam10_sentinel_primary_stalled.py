"""A Sentinel primary stalled (SIGSTOP: a VM paused, a frozen container) long enough for Sentinel
to promote its replica, then continued: for a moment it still believes itself the primary, with
the nodes' commands it had not read waiting in its sockets, until the sentinels make it a
replica of the new one (its data replaced). Under WebSocket traffic, an event stream on every
node and through nginx, and HTTP posts to each.

The promise: nothing the old primary runs once continued is acknowledged and then lost in
silence (each message acknowledged either way reaches every member and stream once and in
order, or they are told, by offset); nothing refused is ever published; a post's 201 is at the
offset history holds; history never holds another message at a position a member was sent.
"""

from __future__ import annotations

import signal
from functools import partial

import pytest
from roomcast_dev.redis_topologies import RedisServer

from tests.support.cluster import until
from tests.support.delivery import in_thread
from tests.support.failovers import sentinel_nodes
from tests.support.posts import checked_after, on_every_path

pytestmark = pytest.mark.integration

ROOMS = ["stalled-north", "stalled-south"]


def demoted(server: RedisServer) -> bool:
    return bool(server.client().info("replication")["role"] == "slave")


async def test_a_stalled_primary_continued_after_its_failover_loses_nothing_in_silence() -> None:
    async with sentinel_nodes() as (topology, cluster):
        traffic, poster = await on_every_path(cluster, ROOMS)
        old = topology.primary()
        try:
            await traffic.more_acks(5)
            old.process.signal(signal.SIGSTOP)
            try:
                await in_thread(partial(topology.wait_for_failover, old.port))
            finally:
                old.process.signal(signal.SIGCONT)
            await until(partial(demoted, old), 30, "the old primary made a replica")
            await traffic.more_acks(20, timeout=40)
            with topology.primary().client() as admin:
                await checked_after(traffic, poster, admin, "sentinel primary stalled")
        finally:
            old.process.signal(signal.SIGCONT)
            await poster.close()
            await traffic.close()
