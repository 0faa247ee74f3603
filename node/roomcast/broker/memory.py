"""In-process broker: the single-node default (no Redis needed) and the unit-test double.

It keeps the same promises as the Redis broker: offsets, bounded history, presence, and delivery
on a later loop turn in publication order.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from roomcast.broker import (
    BrokerUnavailable,
    FailureHandler,
    HistoryLimits,
    HistoryReply,
    JoinReply,
    LevelHandler,
    MessageHandler,
    PublishedHandler,
    StateHandler,
)
from roomcast.wire.protocol import complete_message
from roomcast.wire.recovery import (
    EPOCH_CHANGED,
    NOT_REQUESTED,
    RECOVERED,
    TOO_OLD,
    Since,
)

# Seeded once from the OS: a candidate epoch goes with every join and published message (used
# only if the room has none yet), and os.urandom there would be a getrandom() system call each.
# An epoch needs to be unique, not secret.
_epoch_source = random.Random(os.urandom(16))


def new_epoch() -> str:
    """48 random bits as 12 hex digits: a fresh name for a room's history."""
    return f"{_epoch_source.getrandbits(48):012x}"


@dataclass
class _Room:
    epoch: str = field(default_factory=new_epoch)
    offset: int = 0
    # (stored at, json) newest last
    history: deque[tuple[float, bytes]] = field(default_factory=deque)
    presence: dict[str, str] = field(default_factory=dict)
    held: int = 0  # bytes in history


class MemoryBroker:
    def __init__(
        self,
        on_message: MessageHandler,
        on_state: StateHandler | None = None,
        limits: HistoryLimits | None = None,
    ) -> None:
        self._on_message = on_message
        self._on_state = on_state
        self._limits = limits or HistoryLimits()
        self._subscribed: set[str] = set()
        self._rooms: dict[str, _Room] = {}
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

    def publish_message(
        self,
        room: str,
        head: bytes,
        prefix: bytes,
        on_failure: FailureHandler | None = None,
        on_published: PublishedHandler | None = None,
    ) -> None:
        # One node: the node's own room bucket is the whole room's (never RoomRateLimited).
        state = self._room(room)
        state.offset += 1
        message = complete_message(prefix, state.offset, state.epoch)
        history = state.history
        history.append((time.monotonic(), message))
        state.held += len(message)
        while len(history) > 1 and (
            len(history) > self._limits.size or state.held > self._limits.bytes
        ):
            state.held -= len(history.popleft()[1])
        self.publish(room, head + b"%d\n" % state.offset + message, on_failure)
        if on_published is not None:
            asyncio.get_running_loop().call_soon(on_published, state.epoch, state.offset)

    async def post_message(self, room: str, head: bytes, prefix: bytes) -> tuple[str, int]:
        if not self.ready:
            raise BrokerUnavailable("broker stopped")
        self.publish_message(room, head, prefix)
        state = self._room(room)
        return state.epoch, state.offset

    def charge(
        self, bucket: str, cost: int, rate: float, burst: int, debt: int, on_level: LevelHandler
    ) -> None:
        """Nothing to share: the node's own buckets are the only ones."""

    async def join(
        self, room: str, member: str, username: str, since: Since | None, announce: bytes
    ) -> JoinReply:
        state = self._room(room)
        state.presence[member] = username
        self.publish(room, announce)
        if since is None:
            return JoinReply(state.epoch, state.offset, NOT_REQUESTED)
        if since.epoch != state.epoch or since.offset > state.offset:
            return JoinReply(state.epoch, state.offset, EPOCH_CHANGED)
        missed = state.offset - since.offset
        if missed > len(state.history):
            return JoinReply(state.epoch, state.offset, TOO_OLD)
        messages = (
            [m for _, m in list(state.history)[len(state.history) - missed :]] if missed else []
        )
        return JoinReply(state.epoch, state.offset, RECOVERED, messages)

    def leave(self, room: str, member: str, announce: bytes) -> None:
        state = self._rooms.get(room)
        if state is not None:
            state.presence.pop(member, None)
            self._expire(state)
            if not state.presence and not state.history:
                del self._rooms[room]  # bounded memory: nothing left worth keeping
        self.publish(room, announce)

    async def resync_presence(self, rooms: dict[str, dict[str, str]]) -> None:
        for room, members in rooms.items():
            self._room(room).presence.update(members)

    async def history(self, room: str, limit: int) -> HistoryReply:
        state = self._room(room)
        messages = [m for _, m in state.history]
        return HistoryReply(state.epoch, state.offset, messages[-limit:] if limit else [])

    async def presence(self, room: str) -> dict[str, int]:
        state = self._rooms.get(room)
        return dict(Counter(state.presence.values())) if state is not None else {}

    def _room(self, room: str) -> _Room:
        state = self._rooms.get(room)
        if state is None:
            state = self._rooms[room] = _Room()
        self._expire(state)
        return state

    def _expire(self, state: _Room) -> None:
        horizon = time.monotonic() - self._limits.ttl
        while state.history and state.history[0][0] < horizon:
            state.held -= len(state.history.popleft()[1])

    def _deliver(self, room: str, payload: bytes) -> None:
        if room in self._subscribed:
            self._on_message(room, payload)
