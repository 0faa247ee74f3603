"""The last live message of an epoch the node took for foreign (or left), dropped as stale within
the second after history was last looked at, must still be looked up once that second ends.

How it happens in a Redis Cluster shard failover: the node reads the room's history (its link to
the shard re-made) while the promoted replica writes its first message in a new epoch; the read
answers the old epoch (it ran just before), the new epoch's first messages came meanwhile on the
subscriber link, so the new epoch is remembered as foreign: its messages are dropped as stale and
history is looked at again at most once a second, on the next stale message. Before, a message
dropped inside that second with nothing after it (the room's last for a while) made no look at
all: an acknowledged message held from every member of the node, untold, until the room's next
message came more than a second later.
"""

from __future__ import annotations

import asyncio

import pytest

from roomcast.broker import live_gaps
from roomcast.broker.live_gaps import LiveGaps
from tests.unit.test_live_gaps import EPOCH, History, live, losses, offsets

INTERVAL = 0.05


async def test_the_last_stale_message_is_looked_up_once_the_interval_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(live_gaps, "_STALE_RECHECK_INTERVAL", INTERVAL)
    history = History(latest=3)
    delivered: list[tuple[str, bytes]] = []
    handed_over = asyncio.Event()

    def deliver(room: str, payload: bytes) -> None:
        delivered.append((room, payload))
        handed_over.set()

    gaps = LiveGaps(deliver, history, 100, 5.0)
    gaps.track("r")
    gaps.baseline("r", EPOCH, 3)
    # The promoted replica's first message; history still answers the old epoch.
    gaps.receive("r", live(1, "new"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert gaps.stale == 1 and not delivered
    # Now history is in the new epoch, and its last message comes within the interval.
    history.epoch, history.latest = "new", 2
    gaps.receive("r", live(2, "new"))
    assert gaps.stale == 2
    try:
        async with asyncio.timeout(INTERVAL * 10):  # nothing comes live after it
            while len(delivered) < 3:
                handed_over.clear()
                await handed_over.wait()
    finally:
        await gaps.stop()
    assert offsets(delivered) == [0, 1, 2]  # 0: the loss notice
    assert [(e["reason"], e["epoch"], e["new_epoch"]) for e in losses(delivered)] == [
        ("epoch_changed", EPOCH, "new")
    ]
