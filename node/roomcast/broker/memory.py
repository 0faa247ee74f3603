"""In-process broker: the single-node default (no Redis needed) and the unit-test double."""

from __future__ import annotations

import asyncio

from roomcast.broker import FailureHandler, MessageHandler, StateHandler


class MemoryBroker:
    def __init__(self, on_message: MessageHandler, on_state: StateHandler | None = None) -> None:
        self._on_message = on_message
        self._on_state = on_state
        self._subscribed: set[str] = set()
        self._running = False

    @property
    def ready(self) -> bool:
        return self._running

    @property
    def subscribed_rooms(self) -> frozenset[str]:
        return frozenset(self._subscribed)

    async def start(self) -> None:
        self._running = True
        if self._on_state is not None:
            self._on_state(True)

    async def stop(self) -> None:
        self._running = False
        if self._on_state is not None:
            self._on_state(False)

    async def subscribe(self, room: str) -> None:
        self._subscribed.add(room)

    def unsubscribe(self, room: str) -> None:
        self._subscribed.discard(room)

    def publish(self, room: str, payload: bytes, on_failure: FailureHandler | None = None) -> None:
        # Delivered on the next loop turn, like a real broker: never re-entrantly inside the
        # sender's own frame handling, and in publication order.
        if room in self._subscribed:
            asyncio.get_running_loop().call_soon(self._deliver, room, payload)

    def _deliver(self, room: str, payload: bytes) -> None:
        if room in self._subscribed:
            self._on_message(room, payload)
