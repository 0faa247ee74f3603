"""A room whose history comes back in an epoch this node already left (Sentinel promoted a server
that had lost the room, then a server still holding the old epoch became primary again: seen in
the Sentinel chaos run, seed 4): the node goes on after the last offset it handed over in that
epoch, instead of handing the epoch over again from its offset 1 (every message twice); and the
Python client's cursor, told of the return, resumes there too (no false ``offsets_skipped``)."""

from __future__ import annotations

from roomcast.broker.live_gaps import LiveGaps
from roomcast.client import ChatMessage, Gap, RoomCursor
from roomcast.client.events import Loss
from tests.unit.test_live_gaps import EPOCH, History, live, losses, make, offsets, settle


async def left_after_three(
    epoch: str, latest: int
) -> tuple[History, LiveGaps, list[tuple[str, bytes]]]:
    """Offsets 1-3 of the first epoch handed over, then history found in ``epoch``."""
    history = History(latest=3)
    gaps, delivered = make(history)
    gaps.baseline("r", EPOCH, 0)
    for offset in (1, 2, 3):
        gaps.receive("r", live(offset))
    history.epoch, history.latest = epoch, latest
    gaps.recheck("r")
    await settle(gaps)
    return history, gaps, delivered


async def test_an_epoch_left_and_returned_to_continues_after_what_was_handed_over() -> None:
    # The room is gone from the primary now: a new epoch starts, from its offset 1.
    history, gaps, delivered = await left_after_three("", 0)
    gaps.receive("r", live(1, "e2"))
    gaps.receive("r", live(2, "e2"))
    # A primary still holding the first epoch (3 messages handed over, 2 more since) is back.
    history.epoch, history.latest = EPOCH, 5
    gaps.recheck("r")
    await settle(gaps)
    assert offsets(delivered) == [1, 2, 3, 0, 1, 2, 0, 4, 5]  # 0: the loss notices
    assert [(e["epoch"], e["from_offset"], e["new_epoch"]) for e in losses(delivered)] == [
        (EPOCH, 4, None),
        ("e2", 3, EPOCH),
    ]
    gaps.receive("r", live(3, "e2"))  # a late message of the epoch left: covered by the notice
    gaps.receive("r", live(6))
    await settle(gaps)
    assert offsets(delivered)[-1:] == [6]


def test_the_python_clients_cursor_resumes_an_epoch_it_returns_to() -> None:
    cursor = RoomCursor("r", EPOCH, 3)
    assert cursor.on_loss(Loss("r", "epoch_changed", EPOCH, 4, None, None)) is not None
    assert cursor.accept(ChatMessage("r", "ann", "t", 0, 1, "e2")) == (True, None)
    # The node's notice back into the first epoch, then its offset 4: no hole, nothing twice.
    assert cursor.on_loss(Loss("r", "epoch_changed", "e2", 2, None, EPOCH)) == Gap(
        "r", "epoch_changed", EPOCH, 3
    )
    assert cursor.accept(ChatMessage("r", "ann", "t", 0, 4, EPOCH)) == (True, None)
    assert cursor.accept(ChatMessage("r", "ann", "t", 0, 3, EPOCH)) == (False, None)


async def test_an_epoch_returned_to_with_less_than_was_handed_over_drops_nothing_unsaid() -> None:
    history, gaps, delivered = await left_after_three("e2", 1)
    # Back in the first epoch, whose history ends at 2 now: offset 3 is to come (again), a new
    # message that members' cursors, back after their 3, would drop as delivered: it is
    # announced lost (the whole picture, with the client's cursor:
    # tests/unit/test_epoch_return_node_and_cursor.py).
    history.epoch, history.latest = EPOCH, 2
    gaps.recheck("r")
    await settle(gaps)
    gaps.receive("r", live(3))
    gaps.receive("r", live(4))
    await settle(gaps)
    assert [(e["reason"], e["epoch"], e["from_offset"], e["to_offset"]) for e in losses(delivered)][
        -1
    ] == ("too_old", EPOCH, 3, 3)
    assert offsets(delivered)[-3:] == [0, 0, 4]  # the two notices, then offset 4
