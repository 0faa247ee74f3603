"""A live message of the room's own epoch ahead of everything history holds: the server that
published it failed over to a replica that had not received it (nor the one before it, lost on
the link), and the epoch was kept. History cannot fill the gap before it until the new primary
writes those offsets again; meanwhile the node must not read history again and again, as fast
as Redis answers (on the base: 25 reads in 50 loop turns, until the room's next message)."""

from __future__ import annotations

import asyncio

import pytest

from roomcast.broker import live_gaps
from tests.unit.test_live_gaps import EPOCH, History, live, make, offsets

TURNS = 50


@pytest.fixture(autouse=True)
def looks_again_soon(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gap filler's second between such looks, shortened (the test awaits the next one)."""
    monkeypatch.setattr(live_gaps, "_STALE_RECHECK_INTERVAL", 0.01)


async def test_a_live_message_history_never_reaches_does_not_loop_history_reads() -> None:
    gaps, delivered = make(history := History(latest=3))
    gaps.baseline("r", EPOCH, 3)
    gaps.receive("r", live(5))  # 4 lost on the link; both gone with the old primary
    for _ in range(TURNS):
        await asyncio.sleep(0)
    reads = history.reads
    assert reads <= 2, f"{reads} history reads in {TURNS} loop turns"
    assert offsets(delivered) == []
    # The new primary writes offsets 4 and 5 again; the next look hands them over once.
    history.latest = 5
    gaps.receive("r", live(4))
    gaps.receive("r", live(5))
    try:
        await asyncio.wait_for(gaps.settled(), 5)
    finally:
        await gaps.stop()
    assert offsets(delivered) == [4, 5]
