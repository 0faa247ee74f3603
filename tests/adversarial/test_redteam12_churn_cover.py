"""Red team 12: red team 10's churn cover again, from three addresses instead of one.

Since red team 10, one client's joins and leaves past its own burst (100, then 10/s) are
coalesced and everybody else's are still named. But the named ones of all clients together
spend a room-wide bucket (200, then 20/s), and once it is empty the whole room is coalesced
until it has refilled (docs/protocol.md "A churning client": "several clients churning at
once"). Three addresses, each staying within its own bucket (a burst of 90 events, then 9 a
second: never a churner itself), keep that bucket empty: a user joining meanwhile is never
named, which is the cover red team 10 closed for one address.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.adversarial.churn_cover import churn_cycle, join_is_named, joined, told
from tests.adversarial.devcluster_shim import LocalCluster
from tests.adversarial.rawws import RawWebSocket
from tests.adversarial.readiness import until_ready

ROOM = "covered-by-three"
CHURNERS = ("127.0.0.11", "127.0.0.12", "127.0.0.13")
BURST_CYCLES = 45  # 90 joins and leaves: under a client's own burst of 100
PACED_CYCLES_PER_S = 4.5  # 9 joins and leaves a second: under a client's own 10/s
PACED_S = 2.0


@pytest.fixture
def open_node() -> Iterator[Any]:
    with LocalCluster(1, nginx=False, redis=False) as cluster:
        yield cluster.nodes[0]


async def test_three_addresses_within_their_buckets_do_not_hide_a_join(open_node: Any) -> None:
    await until_ready(open_node)
    port = open_node.port
    watcher = await joined(port, ROOM, "watcher")
    bob = await RawWebSocket.connect("127.0.0.1", port, source="127.0.0.2")
    cycles = 0
    stop = asyncio.Event()

    async def churn(source: str) -> None:
        nonlocal cycles
        for _ in range(BURST_CYCLES):
            cycles += await churn_cycle(port, ROOM, f"churn-{source}", source)
        started, done = time.monotonic(), 0
        while not stop.is_set():
            due = int((time.monotonic() - started) * PACED_CYCLES_PER_S)
            if done < due:
                cycles += await churn_cycle(port, ROOM, f"churn-{source}", source)
                done += 1
            else:
                await asyncio.sleep(0.02)

    churners = [asyncio.ensure_future(churn(source)) for source in CHURNERS]
    try:
        await asyncio.sleep(PACED_S)
        bursts_done = cycles
        named = await join_is_named(bob, watcher, ROOM)
    finally:
        stop.set()
        await asyncio.gather(*churners, return_exceptions=True)
        for ws in (watcher, bob):
            await ws.close()
    names, counts = told(watcher)
    figures = (
        f"{len(CHURNERS)} addresses, {cycles} cycles ({bursts_done} before bob joined); bob "
        f"named: {named}; the watcher got {names} user_joined and {counts} presence_changed"
    )
    print(figures)
    assert named, figures
