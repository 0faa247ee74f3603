"""A live message of an epoch the node never had, while history stays in the node's own epoch:
a server that is no longer primary (a split brain, or its last publications still in flight)
published it, or the history read went to a server behind the one that published it.

Before: the message made the node look in history, history was in the node's epoch, the held
message was taken again, and made the node look again: history read in a loop as fast as Redis
answered, the room's live stream held behind it (until 10,000 events were held and the node gave
up). Now that epoch is remembered as one this node has handed nothing of: its messages are
dropped as stale (history is looked at again at most once a second), and if history comes to be
in it, it is handed over from its offset 1."""

from __future__ import annotations

import pytest

from roomcast.broker import live_gaps
from tests.unit.test_live_gaps import EPOCH, History, live, make, offsets, settle


async def test_a_live_message_of_an_epoch_history_does_not_show_is_looked_up_once() -> None:
    history = History(latest=3)
    gaps, delivered = make(history)
    gaps.baseline("r", EPOCH, 2)
    gaps.receive("r", live(1, "old"))  # from a server that is no longer primary
    gaps.receive("r", live(3))
    await settle(gaps)
    assert history.reads <= 2, f"history read {history.reads} times for one message"
    assert offsets(delivered) == [3]
    assert gaps.stale == 1


async def test_an_epoch_first_seen_live_then_found_in_history_is_handed_over_from_its_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(live_gaps, "_STALE_RECHECK_INTERVAL", 0.0)  # no second to wait
    history = History(latest=3)
    gaps, delivered = make(history)
    gaps.baseline("r", EPOCH, 3)
    gaps.receive("r", live(2, "next"))  # the history read went to a server behind
    await settle(gaps)
    history.epoch, history.latest = "next", 3  # now it answers the epoch the messages came in
    gaps.receive("r", live(3, "next"))
    await settle(gaps)
    assert offsets(delivered)[-3:] == [1, 2, 3]
