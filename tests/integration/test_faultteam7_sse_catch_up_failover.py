"""Event streams (SSE) caught up page by page (resumed from 70 to 180 messages behind, their
readers paused mid-catch-up) while their rooms start a new epoch through a Sentinel failover or
a Redis Cluster shard failover, instead of the Redis restart that
``test_faultteam6_sse_catch_up_epoch.py`` covers: each stream must be told (it ends and its
resume is answered ``recovered: false``, or it gets a ``loss``), never handed the new epoch's
messages in silence."""

from __future__ import annotations

import pytest

from roomcast.broker.cluster_slots import sharded_channel, slot_of
from tests.integration.test_faultteam6_sse_catch_up_epoch import ENV, streams_catching_up_across
from tests.support.failovers import cluster_shard_failover, sentinel_failover

pytestmark = pytest.mark.integration


async def test_streams_catching_up_across_a_sentinel_failover() -> None:
    async with sentinel_failover(ENV) as (cluster, fail_over):
        await streams_catching_up_across(cluster.nodes[0], fail_over)


async def test_streams_catching_up_across_a_cluster_shard_failover() -> None:
    async with cluster_shard_failover(ENV) as (cluster, rooms, fail_over):
        slot = slot_of(sharded_channel(rooms[0]))

        def on_victim(missed: int) -> str:
            """A room in the slot of the shard that fails over."""
            for index in range(1_000_000):
                room = f"catch-{missed}-{index}"
                if slot_of(sharded_channel(room)) == slot:
                    return room
            raise AssertionError("no room name in the slot")

        await streams_catching_up_across(cluster.nodes[0], fail_over, on_victim)
