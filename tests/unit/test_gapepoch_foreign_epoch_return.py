"""An epoch heard live but never adopted, because history answered the node's own epoch (the read
went to a server behind, or answered just before the failover), while the room then comes back
to the node's epoch: the live messages of that epoch were dropped as stale, and nothing ever told
members. Found by the random fault sequences with reads from a server behind
(``test_gapepoch_lagging_reads``: 2 of 1,500 seeds on the base, 679 and 761).

Now a stale look (a second or more after the epoch was taken for foreign) that still finds the
node's own epoch tells members as the node would have, had it adopted that epoch and come back:
``epoch_changed`` into it, then out of it from its offset 1, back where they stood."""

from __future__ import annotations

import asyncio

import pytest

from roomcast.broker import live_gaps
from roomcast.broker.live_gaps import LiveGaps
from roomcast.client import ChatMessage, RoomCursor
from roomcast.client.events import Loss, parse_event
from roomcast.wire import envelope
from tests.unit.test_live_gaps import EPOCH, History, live, losses, offsets

INTERVAL = 0.02
OTHER = "e2"


@pytest.fixture(autouse=True)
def short_stale_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_gaps, "_STALE_RECHECK_INTERVAL", INTERVAL)


async def test_the_messages_of_an_epoch_taken_for_foreign_are_told_when_the_room_comes_back() -> (
    None
):
    history = History(latest=3)
    delivered: list[tuple[str, bytes]] = []
    told = asyncio.Event()

    def deliver(room: str, payload: bytes) -> None:
        delivered.append((room, payload))
        if b'"type":"loss"' in payload:
            told.set()

    gaps = LiveGaps(deliver, history, 100, 5.0)
    gaps.track("r")
    gaps.baseline("r", EPOCH, 0)
    for offset in (1, 2, 3):
        gaps.receive("r", live(offset))
    # Redis lost the room: a new epoch's first two messages come live, but the history read
    # they cause answers the old epoch (a server behind). They are dropped as foreign.
    gaps.receive("r", live(1, OTHER))
    gaps.receive("r", live(2, OTHER))
    await asyncio.wait_for(gaps.settled(), 5)
    assert offsets(delivered) == [1, 2, 3] and gaps.stale == 2
    # A server still holding the first epoch is primary again: its offsets 4 and 5 come live.
    history.latest = 5
    gaps.receive("r", live(4))
    gaps.receive("r", live(5))
    try:
        # The stale look due after the interval reads history: still the first epoch.
        await asyncio.wait_for(told.wait(), INTERVAL * 50)
        await asyncio.wait_for(gaps.settled(), 5)
    finally:
        await gaps.stop()
    assert [(e["epoch"], e["from_offset"], e["new_epoch"]) for e in losses(delivered)] == [
        (EPOCH, 6, OTHER),
        (OTHER, 1, EPOCH),
    ]
    assert offsets(delivered) == [1, 2, 3, 4, 5, 0, 0]  # 0: the notices

    # The Python client's cursor: told of the other epoch's loss, back after its offset 5.
    cursor = RoomCursor("r", EPOCH, 0)
    gaps_told = []
    for _, payload in delivered:
        event = parse_event(envelope.unpack(payload).event)
        if isinstance(event, Loss):
            gaps_told.append(cursor.on_loss(event))
        else:
            assert isinstance(event, ChatMessage) and cursor.accept(event) == (True, None)
    assert [gap.epoch for gap in gaps_told if gap is not None] == [OTHER, EPOCH]
    assert cursor.accept(ChatMessage("r", "u", "t", 0, 6, EPOCH)) == (True, None)
