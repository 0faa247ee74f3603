"""A drain that stopped waiting for Redis answers what is still unanswered ``unconfirmed`` before
its 1001 (the message may yet run: a stalled Redis runs what waits in its socket up to each
script's deadline). Before, such a message had no answer at the close, which the protocol says
of messages never published. The real node and transport, with a broker that holds its answers.
"""

from __future__ import annotations

import asyncio
from typing import Any

from roomcast.broker import FailureHandler, PublishedHandler
from roomcast.broker.memory import MemoryBroker
from roomcast.core.unanswered import Question, Unanswered
from tests.support.wsharness import settle
from tests.unit.test_node import drain, make_env


class HeldBroker(MemoryBroker):
    """Publishes nothing until told: each message's callbacks wait in ``held``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held: list[tuple[bytes, bytes, PublishedHandler | None]] = []

    def publish_message(
        self,
        room: str,
        head: bytes,
        prefix: bytes,
        on_failure: FailureHandler | None = None,
        on_published: PublishedHandler | None = None,
        reserve: int = 0,
    ) -> None:
        self.held.append((head, prefix, on_published))


async def test_a_drain_answers_what_redis_still_holds_unconfirmed_before_its_1001() -> None:
    env = await make_env(HeldBroker)
    broker = env.broker
    assert isinstance(broker, HeldBroker)
    alice = await env.joined("alice", "general")
    drain(alice)
    alice.send_json({"type": "message", "text": "held", "id": 7})
    alice.send_json({"type": "message", "text": "no id"})
    await settle()
    assert len(broker.held) == 2
    drained = asyncio.ensure_future(env.server.drain(deadline=0.2))
    async with asyncio.timeout(5):
        while alice.close_code is None:
            await settle()
    assert alice.events() == [
        {
            "type": "error",
            "code": "unconfirmed",
            "reason": "message may or may not have been sent: the node stopped waiting for Redis",
            "room": "general",
            "id": 7,
        }
    ]
    assert alice.close_code == 1001
    assert env.rejected("unconfirmed") == 1.0
    # Redis runs it after all: its late ack goes nowhere (the close went first).
    on_published = broker.held[0][2]
    assert on_published is not None
    on_published("0001", 1)
    await settle()
    assert alice.events() == []
    alice.disconnect()
    await asyncio.wait_for(drained, 5)


async def test_a_drain_whose_messages_were_all_answered_adds_nothing() -> None:
    env = await make_env()
    alice = await env.joined("alice", "general")
    drain(alice)
    alice.send_json({"type": "message", "text": "quick", "id": 1})
    await settle()
    drained = asyncio.ensure_future(env.server.drain(deadline=0.2))
    async with asyncio.timeout(5):
        while alice.close_code is None:
            await settle()
    assert sorted(e["type"] for e in alice.events()) == ["ack", "message"]
    assert env.rejected("unconfirmed") is None
    alice.disconnect()
    await asyncio.wait_for(drained, 5)


async def test_a_question_settled_after_a_give_up_changes_nothing() -> None:
    book = Unanswered()
    first = Question(book, object(), "r", 1)  # type: ignore[arg-type]  # any hashable member
    Question(book, object(), "r", 2)  # type: ignore[arg-type]
    waiter = asyncio.ensure_future(book.all_settled())
    await settle()
    assert not waiter.done()
    assert sorted(q.request_id for q in book.give_up()) == [1, 2]  # type: ignore[type-var]
    await asyncio.wait_for(waiter, 1)
    first.settle()
    assert len(book) == 0
    await asyncio.wait_for(book.all_settled(), 1)
