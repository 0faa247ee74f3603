"""LiveGaps (every Redis mode): chat messages reach the node once, in offset order, gaps filled."""

from __future__ import annotations

import asyncio

import orjson

from roomcast.broker import BrokerUnavailable, HistoryReply
from roomcast.broker.live_gaps import LiveGaps, sequence_of
from roomcast.wire import envelope, protocol

EPOCH = "e1"


def stored(offset: int, epoch: str = EPOCH) -> bytes:
    prefix = protocol.chat_message_prefix("r", "u", f"m{offset}", 1)
    return protocol.complete_message(prefix, offset, epoch)


def live(offset: int, epoch: str = EPOCH) -> bytes:
    return envelope.pack(0.0, stored(offset, epoch), "", offset)


class History:
    def __init__(self, latest: int, epoch: str = EPOCH, failures: int = 0) -> None:
        self.latest, self.epoch, self.failures = latest, epoch, failures
        self.reads = 0

    async def __call__(self, room: str, limit: int) -> HistoryReply:
        self.reads += 1
        await asyncio.sleep(0)
        if self.failures:
            self.failures -= 1
            raise BrokerUnavailable("down")
        first = max(1, self.latest - limit + 1)
        messages = [stored(o, self.epoch) for o in range(first, self.latest + 1)]
        return HistoryReply(self.epoch, self.latest, messages)


def offsets(delivered: list[tuple[str, bytes]]) -> list[int]:
    return [sequence_of(payload)[0] for _, payload in delivered]


async def settle(gaps: LiveGaps) -> None:
    for _ in range(20):
        await asyncio.sleep(0)
    await gaps.stop()


def make(history: History, patience: float = 5.0) -> tuple[LiveGaps, list[tuple[str, bytes]]]:
    delivered: list[tuple[str, bytes]] = []
    gaps = LiveGaps(lambda room, p: delivered.append((room, p)), history, 100, patience)
    gaps.track("r")
    return gaps, delivered


async def test_in_order_messages_pass_and_duplicates_are_dropped() -> None:
    gaps, delivered = make(History(0))
    gaps.baseline("r", EPOCH, 0)
    for offset in (1, 2, 2, 3, 1):
        gaps.receive("r", live(offset))
    unsequenced = envelope.pack(0.0, protocol.typing("r", "u"), "x")
    gaps.receive("r", unsequenced)
    await settle(gaps)
    assert offsets(delivered) == [1, 2, 3, 0]
    assert gaps.duplicates == 2


async def test_a_skipped_offset_is_filled_from_history_before_what_came_live() -> None:
    history = History(latest=6)
    gaps, delivered = make(history)
    gaps.baseline("r", EPOCH, 2)
    gaps.receive("r", live(3))
    gaps.receive("r", live(6))  # 4 and 5 were published where this node did not listen
    gaps.receive("r", live(7))  # held while the catch-up runs
    await settle(gaps)
    assert offsets(delivered) == [3, 4, 5, 6, 7]
    assert gaps.filled == 3 and history.reads == 1


async def test_recheck_after_resubscribing_finds_what_was_missed() -> None:
    gaps, delivered = make(History(latest=4))
    gaps.baseline("r", EPOCH, 1)
    gaps.recheck("r")
    gaps.receive("r", live(4))  # already in the history read: once only
    gaps.receive("r", live(5))
    await settle(gaps)
    assert offsets(delivered) == [2, 3, 4, 5]


async def test_history_unavailable_is_retried_then_given_up_without_losing_live() -> None:
    gaps, delivered = make(History(latest=5, failures=2))
    gaps.baseline("r", EPOCH, 1)
    gaps.receive("r", live(5))
    await asyncio.sleep(0.2)
    assert offsets(delivered) == [2, 3, 4, 5]
    patient, later = make(History(latest=5, failures=1000), patience=0.0)
    patient.baseline("r", EPOCH, 1)
    patient.receive("r", live(5))
    await asyncio.sleep(0.2)
    await patient.stop()
    assert offsets(later) == [0, 5] and patient.given_up == 1  # 0: the loss notice


def losses(delivered: list[tuple[str, bytes]]) -> list[dict[str, object]]:
    found = []
    for _, payload in delivered:
        event = orjson.loads(envelope.unpack(payload).event)
        if event["type"] == "loss":
            found.append(event)
    return found


async def test_a_new_epoch_is_announced_as_a_loss_then_filled_from_its_start() -> None:
    # History holds every message received live (each is stored before it is published).
    gaps, delivered = make(History(latest=4, epoch="e2"))
    gaps.baseline("r", EPOCH, 10)
    gaps.receive("r", live(3, "e2"))  # Redis lost the room; 1 and 2 came where we did not listen
    gaps.receive("r", live(4, "e2"))
    gaps.receive("r", live(11))  # a late message of the lost epoch: covered by the notice
    await settle(gaps)
    assert losses(delivered) == [
        {
            "type": "loss",
            "room": "r",
            "reason": "epoch_changed",
            "epoch": EPOCH,
            "from_offset": 11,
            "to_offset": None,
            "new_epoch": "e2",
        }
    ]
    assert offsets(delivered) == [0, 1, 2, 3, 4]
    assert gaps.stale == 1


async def test_resubscribing_after_redis_restarted_empty_announces_the_loss_at_once() -> None:
    history = History(latest=0, epoch="")  # nothing in Redis: not even an epoch yet
    gaps, delivered = make(history)
    gaps.baseline("r", EPOCH, 5)
    gaps.recheck("r")
    await asyncio.sleep(0.05)
    assert [event["new_epoch"] for event in losses(delivered)] == [None]
    gaps.receive("r", live(1, "e2"))  # the new epoch's first message: adopted from offset 1
    gaps.receive("r", live(3, "e2"))  # 2 missed: filled from history
    history.epoch, history.latest = "e2", 3
    await settle(gaps)
    assert offsets(delivered) == [0, 1, 2, 3]


async def test_a_gap_older_than_history_is_announced_with_its_offsets() -> None:
    gaps, delivered = make(History(latest=200))  # history keeps 100: 101..200
    gaps.baseline("r", EPOCH, 50)
    gaps.receive("r", live(200))
    await settle(gaps)
    assert losses(delivered)[0] == {
        "type": "loss",
        "room": "r",
        "reason": "too_old",
        "epoch": EPOCH,
        "from_offset": 51,
        "to_offset": 100,
    }
    assert offsets(delivered)[1:] == list(range(101, 201))


async def test_a_gap_that_history_cannot_fill_in_time_is_announced() -> None:
    gaps, delivered = make(History(latest=5, failures=1000), patience=0.0)
    gaps.baseline("r", EPOCH, 1)
    gaps.receive("r", live(5))
    await asyncio.sleep(0.2)
    await gaps.stop()
    assert [(e["reason"], e["from_offset"]) for e in losses(delivered)] == [("unavailable", 2)]
    assert offsets(delivered) == [0, 5]


async def test_after_a_give_up_the_next_message_names_the_exact_range_lost() -> None:
    gaps, delivered = make(History(latest=5, failures=1000), patience=0.0)
    gaps.baseline("r", EPOCH, 1)
    gaps.receive("r", live(5))  # history unreadable: given up, 5 taken as it came
    await asyncio.sleep(0.2)
    gaps.receive("r", live(6))
    await gaps.stop()
    assert [(e["reason"], e["from_offset"], e["to_offset"]) for e in losses(delivered)] == [
        ("unavailable", 2, 4)
    ]
    assert offsets(delivered) == [0, 5, 6]


async def test_after_a_give_up_a_message_of_another_epoch_names_both_losses() -> None:
    gaps, delivered = make(History(latest=5, failures=1000), patience=0.0)
    gaps.baseline("r", EPOCH, 3)
    gaps.receive("r", live(7, "e2"))  # Redis restarted empty meanwhile; e2 is at 7 already
    await asyncio.sleep(0.2)
    await gaps.stop()
    assert [
        (e["reason"], e["epoch"], e["from_offset"], e["to_offset"]) for e in losses(delivered)
    ] == [("epoch_changed", EPOCH, 4, None), ("unavailable", "e2", 1, 6)]
    assert offsets(delivered)[-1] == 7


async def test_a_give_up_with_nothing_held_is_announced_at_once() -> None:
    gaps, delivered = make(History(latest=5, failures=1000), patience=0.0)
    gaps.baseline("r", EPOCH, 1)
    gaps.recheck("r")  # a resubscription, and history cannot be read
    await asyncio.sleep(0.2)
    assert [(e["reason"], e["from_offset"], e["to_offset"]) for e in losses(delivered)] == [
        ("unavailable", 2, None)
    ]
    gaps.receive("r", live(4))
    await gaps.stop()
    assert [(e["from_offset"], e["to_offset"]) for e in losses(delivered)][1:] == [(2, 3)]


async def test_a_join_reply_does_not_skip_a_live_message_still_on_its_way() -> None:
    gaps, delivered = make(History(0))
    gaps.receive("r", live(2))  # the baseline
    gaps.baseline("r", EPOCH, 3)  # a join read offset 3 before message 3 reached us live
    gaps.receive("r", live(3))
    await settle(gaps)
    assert offsets(delivered) == [2, 3]
