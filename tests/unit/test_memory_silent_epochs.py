"""The in-memory broker keeps a silent room's epoch for the history ttl after its last member
left, when the node asks it to, as the Redis scripts do (tests/integration/
test_silent_room_rejoin.py covers them through real nodes)."""

from __future__ import annotations

import pytest

from roomcast.broker import HistoryLimits, JoinReply
from roomcast.broker.memory import MemoryBroker
from roomcast.wire.recovery import EPOCH_CHANGED, RECOVERED, Since


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr("roomcast.broker.memory.time.monotonic", fake)
    return fake


async def rejoined_after(
    broker: MemoryBroker, room: str, clock: Clock, away: float, *, keep: bool
) -> tuple[JoinReply, JoinReply]:
    """A member alone in a fresh room leaves (the node keeping its epoch or not), and after
    ``away`` seconds rejoins with ``since`` offset 0 of that epoch."""
    joined = await broker.join(room, "m1", "alone", None, b"")
    broker.leave(room, "m1", b"", keep_silent_epoch=keep)
    clock.now += away
    return joined, await broker.join(room, "m2", "alone", Since(0, joined.epoch), b"")


async def test_a_kept_epoch_is_found_within_the_ttl_and_not_after(clock: Clock) -> None:
    broker = MemoryBroker(lambda room, payload: None, limits=HistoryLimits(ttl=600))
    joined, back = await rejoined_after(broker, "kept", clock, 59, keep=True)
    assert (back.status, back.epoch, back.offset) == (RECOVERED, joined.epoch, 0)
    joined, back = await rejoined_after(broker, "expired", clock, 61, keep=True)
    assert back.status == EPOCH_CHANGED and back.epoch != joined.epoch


async def test_a_leave_the_node_does_not_keep_for_forgets_the_room(clock: Clock) -> None:
    broker = MemoryBroker(lambda room, payload: None, limits=HistoryLimits(ttl=600))
    joined, back = await rejoined_after(broker, "forgotten", clock, 1, keep=False)
    assert back.status == EPOCH_CHANGED and back.epoch != joined.epoch
