"""The chaos harness's Sentinel failover fault twice in a row, as its schedule may draw it (a pause
of 1-2.5 s between faults): the primary SIGKILLed (it comes back empty, a primary in its own eyes
until Sentinel makes it a replica, some 8 s later), then ``SENTINEL FAILOVER`` or another kill.
Before, the second one found no replica Sentinel would promote: ``SENTINEL FAILOVER`` answered
NOGOODSLAVE, and a kill left no primary at all until ``wait_for_failover`` gave up (the
sentinel run of seed 4411 aborted at t+255 s; seed 4, 40 s, aborted on NOGOODSLAVE at its third
failover). Now each failover first waits for a replica Sentinel would promote."""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace
from typing import cast

import pytest

from tests.chaos.cluster import ChaosCluster
from tests.chaos.devtools import SentinelTopology
from tests.chaos.faults import FaultContext, _sentinel_failover

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("second", ["command", "kill"])
async def test_a_failover_right_after_a_killed_primary_still_happens(second: str) -> None:
    with SentinelTopology() as topology:
        cluster = cast(ChaosCluster, SimpleNamespace(sentinel=topology))
        ctx = FaultContext(cluster, [], [], random.Random(0))
        first = await asyncio.to_thread(_sentinel_failover, ctx, "kill")
        await asyncio.sleep(1.0)  # the shortest pause the schedule draws between two faults
        then = await asyncio.to_thread(_sentinel_failover, ctx, second)
        assert then["old_port"] == first["new_port"]
        assert then["new_port"] == first["old_port"]  # the server restarted empty, now synced
        if second == "kill":
            # Back as a replica of the new primary, ready for the next one.
            await asyncio.to_thread(_sentinel_failover, ctx, "command")
