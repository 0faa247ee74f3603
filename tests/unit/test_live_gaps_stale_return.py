"""Live messages of an epoch the node left are dropped as ``stale`` (they lie in a range already
announced lost), but the room may be back in that epoch (a primary that still held it is primary
again). When the history read after the links were re-made still answered the other epoch (the
command link re-made after the subscriber link, on the server it was leaving), nothing read
history again: before, every later live message of the returned epoch was dropped as stale, in
silence, until the next reconnection. A stale message now makes the node look in history (at
most once per interval), which finds the epoch back and goes on in it."""

from __future__ import annotations

from tests.unit.test_faultteam11_live_gaps_epoch_return import left_after_three
from tests.unit.test_live_gaps import EPOCH, live, losses, offsets, settle


async def test_live_messages_of_an_epoch_returned_to_are_not_dropped_as_stale() -> None:
    # Offsets 1-3 handed over, then a server that had lost the room is primary ("e2").
    history, gaps, delivered = await left_after_three("e2", 1)
    # The server still holding the first epoch is primary again; its new messages 4 and 5
    # come live, and no reconnection of this node asks for a history read.
    history.epoch, history.latest = EPOCH, 5
    gaps.receive("r", live(4))
    gaps.receive("r", live(5))
    await settle(gaps)
    assert offsets(delivered) == [1, 2, 3, 0, 1, 0, 4, 5]  # 0: the loss notices
    assert [(e["epoch"], e["new_epoch"]) for e in losses(delivered)] == [
        (EPOCH, "e2"),
        ("e2", EPOCH),
    ]


async def test_a_flood_of_stale_messages_reads_history_once_per_interval() -> None:
    history, gaps, delivered = await left_after_three("e2", 1)
    reads = history.reads
    # Late messages of the epoch left (an old primary still publishing): covered by the notice.
    for offset in range(4, 104):
        gaps.receive("r", live(offset))
        await settle(gaps)
    assert offsets(delivered) == [1, 2, 3, 0, 1]
    assert gaps.stale == 100
    assert history.reads - reads == 1
