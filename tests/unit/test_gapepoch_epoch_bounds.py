"""Two ways a node's memory of a room's epochs ran out, found by the random fault sequences with
reads from a server behind (``test_gapepoch_lagging_reads``; both also failed on the base).

- History going back twice in one epoch: a look found it ending at 7 (a server that held more
  than the primary does), and the node announced 8-9 as published again; a later look found it
  ending at 6. Offset 7, handed over too, is published again as a new message, which members'
  cursors drop as delivered: it was never said (seed 1,358 of 4,000).
- An epoch returned to after 4 others: the node remembers where it stood in the last 4 epochs
  it left (so do the clients' cursors), and handed an epoch it no longer placed over again from
  its offset 1: every message of it twice (seeds 624 and 3,937). Now the node keeps the names of
  64 more epochs (not their offsets): a return to one of them is told as a loss of what history
  holds of it (``too_old``), and nothing is handed over twice."""

from __future__ import annotations

from tests.unit.test_live_gaps import EPOCH, History, live, losses, make, offsets, settle


async def test_history_going_back_further_announces_the_offsets_published_again_below() -> None:
    history = History(latest=9)
    gaps, delivered = make(history)
    gaps.baseline("r", EPOCH, 0)
    for offset in range(1, 10):
        gaps.receive("r", live(offset))
    history.latest = 7  # the first look: a server that had 7
    gaps.recheck("r")
    await settle(gaps)
    history.latest = 6  # the primary: 6
    gaps.recheck("r")
    await settle(gaps)
    assert [(e["reason"], e["from_offset"], e["to_offset"]) for e in losses(delivered)] == [
        ("too_old", 8, 9),
        ("too_old", 7, 7),
    ]
    # The new messages at 7 to 9: dropped by the cursors as delivered, as by this node.
    for offset in range(7, 11):
        gaps.receive("r", live(offset))
    await settle(gaps)
    assert offsets(delivered)[9:] == [0, 0, 10]  # 0: the notices


async def test_an_epoch_returned_to_after_four_others_is_told_lost_not_handed_over_again() -> None:
    history = History(latest=3)
    gaps, delivered = make(history)
    gaps.baseline("r", EPOCH, 0)
    for offset in (1, 2, 3):
        gaps.receive("r", live(offset))
    for epoch in ("b", "c", "d", "e"):  # four failovers, each to a server with a new epoch
        history.epoch, history.latest = epoch, 1
        gaps.recheck("r")
        await settle(gaps)
    # A server still holding the first epoch (2 more messages since) is primary again.
    history.epoch, history.latest = EPOCH, 5
    gaps.recheck("r")
    await settle(gaps)
    gaps.receive("r", live(6))
    await settle(gaps)
    assert offsets(delivered) == [1, 2, 3, *[0, 1] * 4, 0, 0, 6]  # 0: the notices
    assert [(e["reason"], e["epoch"], e["from_offset"], e["to_offset"]) for e in losses(delivered)][
        -2:
    ] == [("epoch_changed", "e", 2, None), ("too_old", EPOCH, 1, 5)]
