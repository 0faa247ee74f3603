"""Live messages of more foreign epochs at once than the node kept apart (4): servers no longer
primary, or reads served by servers behind, each publishing in its own epoch while history stays
in the node's. Each foreign epoch is told once (``epoch_changed`` into it, then out of it), and
history is looked at about once per stale-look interval, however many messages come.

Before, the fifth pushed the oldest out of the foreign ones kept: its next message was no longer
stale, made the node read history at once, was taken for foreign again and pushed out another,
told again: here, 500 messages of 5 epochs made 1,010 notices (8 epochs: 1,016); over 200
looks, 2,000 messages made 4,010 notices and 2,002 history reads. The node now keeps as many
foreign epoch names as it keeps names of forgotten ones (64)."""

from __future__ import annotations

import asyncio

import pytest

from roomcast.broker import live_gaps
from roomcast.broker.live_gaps import LiveGaps
from tests.unit.test_live_gaps import EPOCH, History, live, losses

INTERVAL = 0.01
LOOKS = 50  # stale-look intervals the foreign messages span
PER_LOOK = 10  # foreign messages within each


@pytest.fixture(autouse=True)
def short_stale_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_gaps, "_STALE_RECHECK_INTERVAL", INTERVAL)


@pytest.mark.parametrize("epochs", [1, 5, 8])
async def test_each_foreign_epoch_is_told_once_and_history_read_once_a_look(epochs: int) -> None:
    history = History(latest=3)
    delivered: list[tuple[str, bytes]] = []
    gaps = LiveGaps(lambda room, payload: delivered.append((room, payload)), history, 100, 5.0)
    gaps.track("r")
    gaps.baseline("r", EPOCH, 0)
    sent = 0
    try:
        for offset in (1, 2, 3):
            gaps.receive("r", live(offset))
        for _ in range(LOOKS):
            for _ in range(PER_LOOK):
                sent += 1
                gaps.receive("r", live(sent, f"foreign-{sent % epochs}"))
            await asyncio.sleep(INTERVAL)  # the stale looks are timed by the interval
        await gaps.settled()
    finally:
        await gaps.stop()
    told = [(event["epoch"], event["new_epoch"]) for event in losses(delivered)]
    foreign = {f"foreign-{index}" for index in range(epochs)}
    assert len(told) == 2 * epochs, f"{len(told)} notices for {epochs} foreign epochs"
    assert {epoch for epoch, _ in told} == foreign | {EPOCH}
    # One read per look, plus those that found each epoch: far fewer than messages.
    assert history.reads <= 2 * LOOKS + epochs, f"{history.reads} reads for {sent} messages"
