"""A room whose offsets go back within the same epoch: Redis failed over to a replica that had
not received the room's last messages (replication is asynchronous) and kept the epoch, so the
next messages are published at offsets the node already handed over. The node's links are made
again and it reads history: same epoch, latest offset below the last one it delivered.

Before: the catch-up found nothing to fill and said nothing; the new messages at the re-used
offsets were dropped as duplicates by the node (and would have been by every client's cursor):
lost without a ``loss``. Now the re-used offsets are announced ``too_old``, as for a room back
in an epoch it left with less history than was handed over."""

from __future__ import annotations

from tests.unit.test_live_gaps import EPOCH, History, live, losses, make, offsets, settle


async def test_offsets_rolled_back_in_the_same_epoch_are_announced() -> None:
    history = History(latest=7)
    gaps, delivered = make(history)
    gaps.baseline("r", EPOCH, 0)
    for offset in range(1, 8):
        gaps.receive("r", live(offset))
    history.latest = 5  # the promoted replica had 1-5 only
    gaps.recheck("r")  # the links were made again after the failover
    await settle(gaps)
    for offset in (6, 7, 8):  # 6 and 7 are new messages, published at offsets handed over
        gaps.receive("r", live(offset))
    await settle(gaps)
    assert [
        (e["reason"], e["epoch"], e["from_offset"], e["to_offset"]) for e in losses(delivered)
    ] == [("too_old", EPOCH, 6, 7)]
    assert offsets(delivered) == [1, 2, 3, 4, 5, 6, 7, 0, 8]
