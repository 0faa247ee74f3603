"""A catch-up whose history read came late (its command link was being re-made while the
subscriber link already received): history was trimmed past the last offset handed over, but
the live messages held meanwhile still hold what it lacks. Only what neither holds is lost.

Before, every offset older than the history read was announced ``too_old`` and the held live
messages carrying them were dropped as duplicates: after a Sentinel failover (3 nodes, 2 rooms
at 100 messages/s, history 100), the members of one node were told the new epoch's offsets
1-47 were lost, though the node had received every one of them."""

from __future__ import annotations

import asyncio

from roomcast.broker import HistoryReply
from tests.unit.test_live_gaps import EPOCH, live, losses, make, offsets, settle, stored


class TrimmedHistory:
    """History keeping only its last ``kept`` messages, readable once ``open`` is set."""

    def __init__(self, latest: int, kept: int, epoch: str = EPOCH) -> None:
        self.latest, self.kept, self.epoch = latest, kept, epoch
        self.open = asyncio.Event()

    async def __call__(self, room: str, limit: int) -> HistoryReply:
        await self.open.wait()
        first = max(1, self.latest - min(limit, self.kept) + 1)
        messages = [stored(o, self.epoch) for o in range(first, self.latest + 1)]
        return HistoryReply(self.epoch, self.latest, messages)


async def test_held_live_messages_fill_what_history_no_longer_holds() -> None:
    history = TrimmedHistory(latest=5, kept=10)
    gaps, delivered = make(history)  # type: ignore[arg-type]
    gaps.baseline("r", EPOCH, 5)
    gaps.recheck("r")  # the subscriber link re-made: the history read waits
    for offset in range(6, 41):
        gaps.receive("r", live(offset))  # held behind the catch-up
    history.latest = 40  # history keeps 31..40 by the time it answers
    history.open.set()
    await settle(gaps)
    assert losses(delivered) == []
    assert offsets(delivered) == list(range(6, 41))


async def test_only_what_neither_history_nor_held_messages_hold_is_lost() -> None:
    history = TrimmedHistory(latest=5, kept=10)
    gaps, delivered = make(history)  # type: ignore[arg-type]
    gaps.baseline("r", EPOCH, 5)
    gaps.recheck("r")
    for offset in (*range(9, 20), *range(23, 41)):  # 6-8 and 20-22 never came live
        gaps.receive("r", live(offset))
    history.latest = 40
    history.open.set()
    await settle(gaps)
    assert [(e["reason"], e["from_offset"], e["to_offset"]) for e in losses(delivered)] == [
        ("too_old", 6, 8),
        ("too_old", 20, 22),
    ]
    assert [o for o in offsets(delivered) if o] == [*range(9, 20), *range(23, 41)]


async def test_held_messages_of_a_new_epoch_fill_it_from_its_start() -> None:
    history = TrimmedHistory(latest=5, kept=10, epoch="e2")
    gaps, delivered = make(history)  # type: ignore[arg-type]
    gaps.baseline("r", EPOCH, 5)
    gaps.recheck("r")  # a failover: the new primary's epoch, heard live before it is read
    for offset in range(1, 31):
        gaps.receive("r", live(offset, "e2"))
    history.latest = 30
    history.open.set()
    await settle(gaps)
    assert [(e["reason"], e["epoch"]) for e in losses(delivered)] == [("epoch_changed", EPOCH)]
    assert offsets(delivered)[1:] == list(range(1, 31))
