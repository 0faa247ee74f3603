"""An epoch taken for foreign and then told to members (``epoch_changed`` into it, then out of it
from its offset 1) takes a place among the epochs their cursors remember as left, as a real one
does: the node must count it the same way, or the epochs it remembers are no longer theirs.

Before, the node kept told foreign epochs apart from the epochs it left. Three epochs left, then
one foreign epoch told: the cursors (4 remembered) had pushed out the oldest real one, the node
had not; the room back in it (a server that still held it primary again), the node went on after
what it had handed over there while the cursors started it from offset 0, and the next message
was a false ``offsets_skipped`` gap. Now the node counts the told epoch as the cursors do: a
return to an epoch they pushed out is told lost (``too_old``, 1 to history's end), as any return
past the epochs remembered; one to an epoch they still remember goes on after it, no gap."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from roomcast.broker import live_gaps
from roomcast.broker.live_gaps import LiveGaps, sequence_of
from roomcast.client import ChatMessage, RoomCursor
from roomcast.client.events import Gap, Loss, parse_event
from roomcast.wire import envelope
from tests.unit.test_live_gaps import EPOCH, History, live, losses

INTERVAL = 0.02
FOREIGN = "foreign"
LEFT = ("e2", "e3", "e4")  # epochs the room moves through after EPOCH, two messages each
RETURN_LATEST = 5  # the last offset of the epoch returned to, where history then ends


@pytest.fixture(autouse=True)
def short_stale_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_gaps, "_STALE_RECHECK_INTERVAL", INTERVAL)


class Delivered:
    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self._changed = asyncio.Event()

    def __call__(self, room: str, payload: bytes) -> None:
        self.payloads.append(payload)
        self._changed.set()

    async def until(self, done: Callable[[], bool]) -> None:
        while not done():
            self._changed.clear()
            await asyncio.wait_for(self._changed.wait(), INTERVAL * 100)


def losses_of(payloads: list[bytes]) -> list[dict[str, object]]:
    return losses([("r", payload) for payload in payloads])


def settled_in(payloads: list[bytes], epoch: str) -> bool:
    """Whether the node reached the end of ``epoch``'s history: handed over, or told lost."""
    last = payloads[-1]
    if sequence_of(last) == (RETURN_LATEST, epoch):
        return True
    told = losses_of([last])
    return bool(told) and (told[0]["epoch"], told[0]["to_offset"]) == (epoch, RETURN_LATEST)


async def node_stream(back_to: str) -> list[bytes]:
    """What a node hands its members: EPOCH 1-3, the epochs of LEFT (1-2 each), a foreign one
    told, then the room back in ``back_to``, its history ending at RETURN_LATEST."""
    history = History(latest=3)
    delivered = Delivered()
    gaps = LiveGaps(delivered, history, 100, 5.0)
    gaps.track("r")
    gaps.baseline("r", EPOCH, 0)
    try:
        for offset in (1, 2, 3):
            gaps.receive("r", live(offset))
        for epoch in LEFT:
            history.epoch, history.latest = epoch, 2
            gaps.receive("r", live(1, epoch))
            await gaps.settled()
        # A new epoch's message, while history answers the node's own: taken for foreign.
        gaps.receive("r", live(1, FOREIGN))
        await gaps.settled()
        # The next, within the second after: the stale look due then still finds LEFT[-1].
        gaps.receive("r", live(2, FOREIGN))
        await delivered.until(lambda: len(losses_of(delivered.payloads)) == len(LEFT) + 2)
        await gaps.settled()
        history.epoch, history.latest = back_to, RETURN_LATEST
        gaps.receive("r", live(RETURN_LATEST - 1, back_to))  # stale: looked up, found back
        await delivered.until(lambda: settled_in(delivered.payloads, back_to))
        await gaps.settled()
    finally:
        await gaps.stop()
    return delivered.payloads


def through_a_cursor(payloads: list[bytes]) -> tuple[RoomCursor, list[Gap]]:
    cursor = RoomCursor("r", EPOCH, 0)
    gaps: list[Gap] = []
    for payload in payloads:
        event = parse_event(envelope.unpack(payload).event)
        if isinstance(event, Loss):
            gap = cursor.on_loss(event)
        else:
            assert isinstance(event, ChatMessage)
            deliver, gap = cursor.accept(event)
            assert deliver, f"{event.epoch} {event.offset} dropped as a duplicate"
        if gap is not None:
            gaps.append(gap)
    return cursor, gaps


async def test_a_return_to_an_epoch_the_told_foreign_one_pushed_out_is_told_not_a_false_gap() -> (
    None
):
    payloads = await node_stream(EPOCH)
    cursor, gaps = through_a_cursor(payloads)
    assert "offsets_skipped" not in [gap.reason for gap in gaps], gaps
    assert (cursor.epoch, cursor.offset) == (EPOCH, RETURN_LATEST)
    told = [
        (event["reason"], event["epoch"], event["from_offset"], event["to_offset"])
        for event in losses_of(payloads)
    ]
    assert told[-2:] == [
        ("epoch_changed", LEFT[-1], 3, None),
        ("too_old", EPOCH, 1, RETURN_LATEST),  # the cursors no longer know where they were
    ]


async def test_a_return_to_an_epoch_the_cursors_still_remember_goes_on_after_it() -> None:
    back_to = LEFT[0]
    payloads = await node_stream(back_to)
    assert [sequence_of(p) for p in payloads[-3:]] == [(o, back_to) for o in (3, 4, 5)]
    cursor, gaps = through_a_cursor(payloads)
    assert [gap.reason for gap in gaps] == ["epoch_changed"] * len(losses_of(payloads)), gaps
    assert (cursor.epoch, cursor.offset) == (back_to, RETURN_LATEST)
