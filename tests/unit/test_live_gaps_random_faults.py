"""Random fault sequences against the real LiveGaps and the real Python RoomCursor: publications
(some lost on the subscriber link, some delayed behind it), links re-made, history reads that
fail for a while, Redis losing the room (a new epoch) and a server holding an old epoch becoming
primary again (its last messages possibly not replicated), history trimmed. After each sequence
Redis is healthy and the node looks once more; then every published message must have reached
the client once, in offset order within its epoch, or be covered by a loss the client was told
of (a ``Gap``). Fixed seeds, a bounded number of sequences and steps."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Container, Sequence
from dataclasses import dataclass, field

from roomcast.broker import BrokerUnavailable, HistoryReply
from roomcast.broker.live_gaps import LiveGaps
from roomcast.client import ChatMessage, RoomCursor
from roomcast.client.events import Loss, parse_event
from roomcast.wire import envelope, protocol

SEQUENCES = 300
STEPS = 60
HISTORY_SIZE = 8


def chat(text: str, offset: int, epoch: str) -> bytes:
    return protocol.complete_message(protocol.chat_message_prefix("r", "u", text, 1), offset, epoch)


@dataclass
class Redis:
    """The room as Redis holds it, and what reaches the node's subscriber link."""

    epoch: str = "e0"
    messages: list[tuple[int, str]] = field(default_factory=list)  # (offset, text), in order
    latest: int = 0
    failures: int = 0
    saved: dict[str, tuple[int, list[tuple[int, str]]]] = field(default_factory=dict)
    published: list[tuple[str, int, str]] = field(default_factory=list)  # (epoch, offset, text)
    link: list[bytes] = field(default_factory=list)  # published, not yet received by the node
    epochs_made: int = 0
    served: int = 0  # history reads answered
    # Acknowledged, then gone with a server that had not replicated them: nobody can name them
    # unless a node had handed them over (then they are re-used offsets it announces).
    rolled_back: set[str] = field(default_factory=set)

    async def read(self, room: str, limit: int) -> HistoryReply:
        await asyncio.sleep(0)
        if self.failures:
            self.failures -= 1
            raise BrokerUnavailable("down")
        self.served += 1
        kept = self.messages[-min(limit, HISTORY_SIZE) :]
        return HistoryReply(
            self.epoch, self.latest, [chat(text, offset, self.epoch) for offset, text in kept]
        )

    def publish(self, text: str, heard: bool) -> None:
        if not self.epoch:
            self.epochs_made += 1
            self.epoch, self.latest, self.messages = f"e{self.epochs_made}", 0, []
        self.latest += 1
        self.messages = [*self.messages, (self.latest, text)][-HISTORY_SIZE:]
        self.published.append((self.epoch, self.latest, text))
        if heard:
            self.link.append(
                envelope.pack(0.0, chat(text, self.latest, self.epoch), "", self.latest)
            )

    def lose_everything(self) -> None:
        """Redis restarted empty (or a replica that never had the room was promoted)."""
        if self.epoch:
            self.saved[self.epoch] = (self.latest, list(self.messages))
        self.epoch, self.latest, self.messages = "", 0, []

    def return_to(self, epoch: str, unreplicated: int) -> None:
        """A server still holding ``epoch`` is primary again, without its last few messages."""
        if self.epoch:
            self.saved[self.epoch] = (self.latest, list(self.messages))
        latest, messages = self.saved.pop(epoch)
        cut = min(unreplicated, len(messages))
        self.rolled_back.update(text for _, text in messages[len(messages) - cut :])
        self.epoch, self.latest = epoch, latest - cut
        self.messages = messages[: len(messages) - cut]


@dataclass
class Client:
    cursor: RoomCursor
    kept: list[tuple[str, int, str]] = field(default_factory=list)
    told: list[Loss] = field(default_factory=list)  # losses the cursor made a Gap of

    def take(self, payload: bytes) -> None:
        event = parse_event(envelope.unpack(payload).event)
        if isinstance(event, Loss):
            if self.cursor.on_loss(event) is not None:
                self.told.append(event)
        elif isinstance(event, ChatMessage):
            keep, _ = self.cursor.accept(event)
            if keep:
                self.kept.append((event.epoch, event.offset, event.text))


def covered(told: list[Loss], seen: set[str], epoch: str, offset: int) -> bool:
    if epoch not in seen and any(loss.reason == "epoch_changed" for loss in told):
        # A whole epoch the node never saw (Redis lost the room twice while the node was not
        # listening): nobody can name it; the epoch change told is all there is to say.
        return True
    return any(
        loss.epoch == epoch
        and loss.from_offset <= offset
        and (loss.to_offset is None or offset <= loss.to_offset)
        for loss in told
    )


async def failed_over(redis: Redis, gaps: LiveGaps) -> None:
    """Another server serves the room: the node's links to the old one broke (what was on its
    way is lost) and are made again, and the node reads the new server's history before the
    next failover. (A failover whose history no node could read, then offsets published again
    over those it had handed over, is beyond what a node can tell: they look like duplicates.)"""
    redis.link.clear()
    redis.failures = 0
    served = redis.served
    gaps.recheck("r")
    # A catch-up already running may be waiting to retry a failed read: it reads again.
    await asyncio.wait_for(gaps.settled(), 5)
    assert redis.served > served, "the node never read history after the failover"


async def run(seed: int) -> None:
    rng = random.Random(seed)
    redis = Redis()
    client = Client(RoomCursor("r", "e0", 0))
    gaps = LiveGaps(lambda room, payload: client.take(payload), redis.read, HISTORY_SIZE, 0.0)
    gaps.track("r")
    gaps.baseline("r", "e0", 0)
    steps: list[str] = []
    for step in range(STEPS):
        action = rng.choices(
            ["publish", "flush", "drop_link", "yield", "down", "reset", "return"],
            [40, 20, 5, 15, 4, 3, 3],
        )[0]
        steps.append(action)
        if await link_step(action, rng, redis, gaps, f"s{seed}-{step}"):
            continue
        if action == "reset":
            redis.lose_everything()
            await failed_over(redis, gaps)
        elif action == "return" and redis.saved:
            # Among the last 4 epochs left: as many as nodes and cursors remember (beyond, an
            # epoch returned to is handed over again from its start).
            redis.return_to(rng.choice(list(redis.saved)[-4:]), rng.randint(0, 2))
            await failed_over(redis, gaps)
    await end_healthy(redis, gaps)
    assert_delivered_once_in_order_or_told(seed, client, redis, steps)


async def link_step(
    action: str, rng: random.Random, redis: Redis, gaps: LiveGaps, text: str
) -> bool:
    """The steps with no failover: whether ``action`` was one of them (then it is done)."""
    if action == "publish":
        redis.publish(text, heard=rng.random() < 0.85)
    elif action == "flush":
        count = rng.randint(1, 4)
        for payload in redis.link[:count]:
            gaps.receive("r", payload)
        del redis.link[:count]
    elif action == "drop_link":
        redis.link.clear()  # what was on its way is lost; the link is made again
        gaps.recheck("r")
    elif action == "yield":
        for _ in range(rng.randint(1, 6)):
            await asyncio.sleep(0)
    elif action == "down":
        redis.failures = rng.randint(1, 3)
    else:
        return False
    return True


async def end_healthy(redis: Redis, gaps: LiveGaps) -> None:
    """Healthy again: everything on its way arrives, and the node looks in history once more."""
    redis.failures = 0
    for payload in redis.link:
        gaps.receive("r", payload)
    redis.link.clear()
    for _ in range(3):
        for _ in range(30):
            await asyncio.sleep(0)
        gaps.recheck("r")
    for _ in range(60):
        await asyncio.sleep(0)
    await gaps.stop()


def assert_delivered_once_in_order_or_told(
    seed: int,
    client: Client,
    redis: Redis,
    steps: list[str],
    restarts: Sequence[tuple[int, str, int]] = (),
    unknowable: Container[str] = (),
) -> None:
    """Every message published reached the client once, in offset order within its epoch, or is
    covered by a loss it was told of. ``restarts``: (index in ``client.kept``, epoch, offset)
    where the client's cursor entered an epoch and went on after that offset; ``unknowable``:
    epochs no node could know of."""
    texts = [text for _, _, text in client.kept]
    assert len(texts) == len(set(texts)), (seed, "delivered twice", client.kept, steps)
    last: dict[str, int] = {}
    pending = iter(restarts)
    restart = next(pending, None)
    for index, (epoch, offset, text) in enumerate(client.kept):
        while restart is not None and restart[0] <= index:
            last[restart[1]] = restart[2]
            restart = next(pending, None)
        assert offset > last.get(epoch, 0), (seed, "out of order", text, client.kept, steps)
        last[epoch] = offset
    delivered = set(texts)
    seen = {epoch for epoch, _, _ in client.kept} | {loss.epoch for loss in client.told}
    seen |= {loss.new_epoch for loss in client.told if loss.new_epoch}
    for epoch, offset, text in redis.published:
        if text in delivered or text in redis.rolled_back or epoch in unknowable:
            continue
        assert covered(client.told, seen, epoch, offset), (
            seed,
            "lost without a Gap",
            (epoch, offset, text),
            client.kept,
            client.told,
            steps,
        )


async def test_random_fault_sequences_deliver_once_in_order_or_tell_the_loss() -> None:
    for seed in range(SEQUENCES):
        await run(seed)
