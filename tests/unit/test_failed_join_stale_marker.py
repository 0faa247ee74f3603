"""A join whose Redis script ran but whose reply was lost (the command link dropped after the
script): the node retracts it with a ``user_left`` and tells the client ``unavailable``, and the
client joins again at once on the same connection. The failed attempt's ``user_joined`` carries
the connection as the one to skip, as the retry's does, and may still be on its way through
pub/sub when the retry starts. Taken as the retry's marker (its point in the room's stream), the
retry stopped waiting for its own: a message published between the two scripts, read from
history for the retry, was sent again when it came live. Only the attempt's own ``user_joined``
(the very envelope it published) marks its point."""

from __future__ import annotations

from typing import Any

from roomcast.broker import BrokerUnavailable
from tests.support.wsharness import settle
from tests.unit.test_faultteam12_leave_then_rejoin_marker import (
    SlowPubSubBroker,
    after_one_message,
)
from tests.unit.test_node import drain, send_messages


class ReplyLostBroker(SlowPubSubBroker):
    """``lose_reply``: the next join script runs (and publishes), then its reply is lost."""

    lose_reply = False

    async def join(self, *args: Any, **kwargs: Any) -> Any:
        reply = await super().join(*args, **kwargs)
        if self.lose_reply:
            self.lose_reply = False
            raise BrokerUnavailable("reply lost")
        return reply


async def test_a_retried_join_is_not_marked_by_the_failed_attempts_user_joined() -> None:
    broker, alice, bob, epoch = await after_one_message(ReplyLostBroker)
    assert isinstance(broker, ReplyLostBroker)
    bob.send_json({"type": "leave", "room": "general"})
    await settle()
    drain(bob)
    since = {"epoch": epoch, "offset": 1}
    join = {"type": "join", "room": "general", "username": "bob", "since": since}
    broker.slow = True
    broker.lose_reply = True
    bob.send_json(join)  # its user_joined is published, not yet received by the node
    await settle()
    assert [e["type"] for e in bob.events()] == ["error"]
    await send_messages(alice, "two")  # offset 2, not yet received by the node
    broker.release_on_join = 1  # the failed attempt's user_joined, during the retry's script
    bob.send_json(join)
    await settle()
    broker.slow = False
    broker.release()  # its user_left, "two", then the retry's user_joined
    await settle()
    events = bob.events()
    assert [e["type"] for e in events][:1] == ["joined"]
    offsets = [e["offset"] for e in events if e["type"] == "message"]
    assert offsets == [2], f"sent {offsets} after rejoining since offset 1"
    drain(alice)
