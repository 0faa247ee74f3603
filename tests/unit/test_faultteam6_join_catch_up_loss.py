"""A rejoin with ``since`` that missed more than a page is caught up through the lag path
(``core.lag``), and the live events held during its join round trip are not sent (the chat
messages among them are in history). A ``loss`` notice among them (Redis restarted empty
during the join: a new epoch from offset 1) is in no history: dropped, the joiner would read on
by offset and, once the new epoch's offsets reached its own, be taken live with no word. It is
closed 1013 instead, like a lagging member that missed a loss; its client rejoins with
``since`` and learns ``recovered: false``."""

from __future__ import annotations

import asyncio
from typing import Any

from roomcast.broker.memory import MemoryBroker
from roomcast.wire import protocol
from roomcast.wire.envelope import pack
from tests.support.wsharness import settle
from tests.unit.test_node import drain, make_env, send_messages


class LossDuringJoinBroker(MemoryBroker):
    """Announces a loss of the room just after a chosen join's script ran."""

    lose_on_join = False
    epoch = ""

    async def join(self, room: str, *args: Any, **kwargs: Any) -> Any:
        reply = await super().join(room, *args, **kwargs)
        if self.lose_on_join:
            self.lose_on_join = False
            notice = protocol.loss(room, protocol.LOSS_EPOCH_CHANGED, self.epoch, 4, None, "e2")
            # After the join's marker (delivered on the next loop turn), like a real loss.
            asyncio.get_running_loop().call_soon(self._deliver, room, pack(0.0, notice))
            await asyncio.sleep(0)
        return reply


async def test_a_loss_held_during_a_join_caught_up_by_pages_closes_the_joiner() -> None:
    env = await make_env(LossDuringJoinBroker)
    env.node._page_bytes = 100  # two messages are more than a page: the lag path
    alice = await env.joined("alice", "general")
    bob = await env.joined("bob", "general")
    await send_messages(alice, "one", "two")
    epoch = bob.events()[-1]["epoch"]
    bob.disconnect()
    await send_messages(alice, "three", "four")
    drain(alice)
    assert isinstance(env.broker, LossDuringJoinBroker)
    env.broker.lose_on_join, env.broker.epoch = True, epoch
    back = await env.connect()
    since = {"offset": 2, "epoch": epoch}
    back.send_json({"type": "join", "room": "general", "username": "bob", "since": since})
    await settle()
    events = back.events()
    told = back.close_code == 1013 or any(e["type"] == "loss" for e in events)
    assert told, f"a loss during the join passed over in silence: {events}"
