"""The broker carries room traffic between nodes. The node above it never touches the network.

Two implementations: :class:`~roomcast.broker.memory.MemoryBroker` (single node, the default, and
the unit-test double) and :class:`~roomcast.broker.redis.RedisBroker` (cluster mode).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

# (room, payload) for each publication on a room this node subscribed to, in the broker's order.
MessageHandler = Callable[[str, bytes], None]
# Called with True when the broker becomes usable, False when it stops being usable.
StateHandler = Callable[[bool], None]
# Called when a publication could not be handed to the broker; the sender must be told.
FailureHandler = Callable[[], None]


class BrokerUnavailable(Exception):
    """The broker cannot take the request now (Redis down); the client gets ``unavailable``."""


class Broker(Protocol):
    @property
    def ready(self) -> bool:
        """True when subscribe and publish can succeed now."""

    async def start(self) -> None:
        """Begin connecting; returns at once (a node starts even while Redis is down)."""

    async def stop(self) -> None: ...

    async def subscribe(self, room: str) -> None:
        """Return once publications to ``room`` are sure to reach this node.

        Idempotent and cheap when the subscription is already confirmed. Raises
        BrokerUnavailable when it cannot be confirmed in time.
        """

    def unsubscribe(self, room: str) -> None:
        """Stop receiving ``room`` (its last local member left)."""

    def publish(self, room: str, payload: bytes, on_failure: FailureHandler | None = None) -> None:
        """Queue ``payload`` for every subscriber of ``room``, keeping the caller's order.

        Never blocks; ``on_failure`` runs (later, on the loop) if it cannot be delivered to the
        broker.
        """
