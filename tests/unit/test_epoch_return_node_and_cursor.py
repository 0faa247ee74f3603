"""A room back in an epoch it left, whose history there ends before the last offset a node
handed over in it (the primary that came back had not replicated the last messages): the
offsets after the end of that history are published again, as new messages. The node and its
members' cursors must agree on them: each new message delivered, or its loss announced.

Before: the node went on at min(handed over, latest in history) and delivered the new offset 3,
while the client's cursor, told only that the room is back in the epoch, went on after the 3 it
had delivered and dropped the new 3 as a duplicate: a message lost in silence."""

from __future__ import annotations

from roomcast.client import ChatMessage, Gap, RoomCursor
from roomcast.client.events import Loss, parse_event
from roomcast.wire import envelope
from tests.unit.test_faultteam11_live_gaps_epoch_return import left_after_three
from tests.unit.test_live_gaps import EPOCH, live, settle


def feed(cursor: RoomCursor, delivered: list[tuple[str, bytes]]) -> tuple[list[str], list[Gap]]:
    """What the node handed over, as the client sees it: texts kept and gaps told."""
    kept: list[str] = []
    gaps: list[Gap] = []
    for _, payload in delivered:
        event = parse_event(envelope.unpack(payload).event)
        if isinstance(event, Loss):
            gap = cursor.on_loss(event)
            if gap is not None:
                gaps.append(gap)
        elif isinstance(event, ChatMessage):
            keep, gap = cursor.accept(event)
            if gap is not None:
                gaps.append(gap)
            if keep:
                kept.append(f"{event.epoch}:{event.offset}")
    return kept, gaps


async def test_a_new_offset_of_a_returned_epoch_is_delivered_or_announced_to_the_client() -> None:
    history, gaps, delivered = await left_after_three("e2", 1)
    history.epoch, history.latest = EPOCH, 2  # back in the first epoch, its history ends at 2
    gaps.recheck("r")
    await settle(gaps)
    gaps.receive("r", live(3))  # a new message, published at offset 3 again
    gaps.receive("r", live(4))
    await settle(gaps)
    cursor = RoomCursor("r")
    kept, told = feed(cursor, delivered)
    assert kept[:3] == [f"{EPOCH}:1", f"{EPOCH}:2", f"{EPOCH}:3"]
    new_three_kept = kept.count(f"{EPOCH}:3") == 2
    new_three_told = any(
        g.epoch == EPOCH and g.offset >= 3 and g.reason != "epoch_changed" for g in told
    )
    assert new_three_kept or new_three_told, (kept, told)
    assert kept[-1] == f"{EPOCH}:4"
