"""A member that leaves a room and joins it again at once, with ``since``, on the same
connection: its ``user_left`` carries the connection as the one to skip, as its join's
``user_joined`` does, and may still be on its way through pub/sub when the join starts. Taken as
the join's marker (its point in the room's stream), the join stopped waiting for the real one:
a message published before the join script ran, but not yet received, was sent from history and
then live again (found by a leave/rejoin churn under traffic, ~1 duplicate per 1,000 rejoins).
Only the join's own ``user_joined`` marks its point now."""

from __future__ import annotations

from collections import deque
from typing import Any

from roomcast.broker.memory import MemoryBroker
from tests.support.wsharness import WsClient, settle
from tests.unit.test_node import drain, make_env, send_messages


class SlowPubSubBroker(MemoryBroker):
    """While ``slow``, publications wait in order until released: pub/sub behind the scripts.
    ``release_on_join`` of them arrive while the next join's script runs."""

    slow = False
    release_on_join = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting: deque[tuple[str, bytes]] = deque()

    def publish(self, room: str, payload: bytes, on_failure: Any = None) -> None:
        if self.slow:
            self.waiting.append((room, payload))
        else:
            super().publish(room, payload, on_failure)

    async def join(self, *args: Any, **kwargs: Any) -> Any:
        self.release(self.release_on_join)
        self.release_on_join = 0
        return await super().join(*args, **kwargs)

    def release(self, count: int | None = None) -> None:
        for _ in range(len(self.waiting) if count is None else count):
            self._deliver(*self.waiting.popleft())


async def after_one_message(
    broker_class: type[SlowPubSubBroker],
) -> tuple[SlowPubSubBroker, WsClient, WsClient, str]:
    """Alice and Bob in "general", Alice's message at offset 1 delivered: (broker, alice, bob,
    the room's epoch)."""
    env = await make_env(broker_class)
    broker = env.broker
    assert isinstance(broker, broker_class)
    alice = await env.joined("alice", "general")
    bob = await env.joined("bob", "general")
    await send_messages(alice, "one")
    return broker, alice, bob, bob.events()[-1]["epoch"]


async def test_a_rejoin_is_not_marked_by_its_own_leave() -> None:
    broker, alice, bob, epoch = await after_one_message(SlowPubSubBroker)
    broker.slow = True
    bob.send_json({"type": "leave", "room": "general"})
    await send_messages(alice, "two")  # offset 2, not yet received by the node
    broker.release_on_join = 1  # bob's user_left, during his join's script
    drain(bob)
    since = {"epoch": epoch, "offset": 1}
    bob.send_json({"type": "join", "room": "general", "username": "bob", "since": since})
    await settle()
    broker.slow = False
    broker.release()  # "two", then bob's user_joined
    await settle()
    offsets = [e["offset"] for e in bob.events() if e["type"] == "message"]
    assert offsets == [2], f"sent {offsets} after rejoining since offset 1"
