"""A loss announced in the epoch a room started over in, while the client's cursor does not know
that epoch yet: the node's ``epoch_changed`` notice had ``new_epoch`` null (the room had no
message in its new epoch), then the node's catch-up gave up (Redis unreachable) and the next
live message, offset 3 of the new epoch, was adopted with ``unavailable`` notices for what came
before it.

Before: the cursor, at epoch None, dropped every notice whose epoch was not its own (None), then
took offset 3 as the first message of the new epoch: offsets 1 and 2 lost, and no ``Gap`` said
so. The same for a ``too_old`` notice of the new epoch (its history trimmed before this node
read it)."""

from __future__ import annotations

import asyncio

from roomcast.client import ChatMessage, Gap, RoomCursor
from roomcast.client.events import Loss
from tests.unit.test_epoch_return_node_and_cursor import feed
from tests.unit.test_live_gaps import EPOCH, History, live, make, settle


async def test_a_loss_in_the_epoch_started_over_in_reaches_the_client_as_a_gap() -> None:
    history = History(latest=3)
    gaps, delivered = make(history, patience=0.0)
    gaps.baseline("r", EPOCH, 0)
    for offset in (1, 2, 3):
        gaps.receive("r", live(offset))
    history.epoch, history.latest = "", 0  # the room is gone from Redis: no epoch yet
    gaps.recheck("r")
    await settle(gaps)
    history.failures = 1_000_000  # then Redis cannot be read at all: the catch-up gives up
    gaps.recheck("r")
    await asyncio.wait_for(gaps.settled(), 5)
    assert gaps.given_up == 1
    gaps.receive("r", live(3, "e2"))  # 1 and 2 of the new epoch were published unheard
    gaps.receive("r", live(4, "e2"))
    await settle(gaps)
    kept, told = feed(RoomCursor("r"), delivered)
    assert kept == [f"{EPOCH}:1", f"{EPOCH}:2", f"{EPOCH}:3", "e2:3", "e2:4"]
    assert any(g.epoch == "e2" and g.reason == "unavailable" for g in told), told


def test_a_too_old_notice_of_the_new_epoch_is_told_before_its_first_message() -> None:
    cursor = RoomCursor("r", EPOCH, 3)
    assert cursor.on_loss(Loss("r", "epoch_changed", EPOCH, 4, None, None)) is not None
    # The node's catch-up of the new epoch found its history starting at 6.
    assert cursor.on_loss(Loss("r", "too_old", "e2", 1, 5, None)) == Gap("r", "too_old", "e2", 5)
    assert cursor.since() == {"epoch": "e2", "offset": 5}
    assert cursor.accept(ChatMessage("r", "ann", "t", 0, 6, "e2")) == (True, None)
