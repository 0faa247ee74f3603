"""In-process broker: the single-node default (no Redis needed) and the unit-test double.

It keeps the same promises as the Redis broker: offsets, bounded history, presence, and delivery
on a later loop turn in publication order.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from roomcast.broker import (
    KEPT_SILENT_EPOCH_SECONDS,
    MAX_BANS_LISTED,
    Ban,
    BrokerUnavailable,
    BucketCharge,
    ControlHandler,
    FailureHandler,
    HistoryLimits,
    HistoryPage,
    HistoryReply,
    JoinReply,
    MessageHandler,
    NotInHistory,
    PresenceEntry,
    PublishedHandler,
    RoomBanned,
    RoomCounts,
    RoomPresence,
    StateHandler,
    StatsSource,
    counts_of,
)
from roomcast.wire import envelope, protocol
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
    presence: dict[str, PresenceEntry] = field(default_factory=dict)  # member -> entry
    held: int = 0  # bytes in history
    bans: dict[str, Ban] = field(default_factory=dict)  # user -> ban (until: wall clock, ms)


class _SilentEpochs:
    """Epochs of rooms that never had a message, kept for KEPT_SILENT_EPOCH_SECONDS (at most
    the history ttl) after their last member left (as the Redis scripts keep them): a member
    that rejoins with ``since`` meanwhile finds its epoch instead of being told a history that
    never was is lost. Oldest first, so the expired ones are dropped from the front."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._kept: dict[str, tuple[str, float]] = {}  # room -> (epoch, when its last left)

    def keep(self, room: str, epoch: str) -> None:
        self._prune()
        self._kept.pop(room, None)
        self._kept[room] = (epoch, time.monotonic())

    def take(self, room: str) -> str | None:
        """The room's kept epoch (no longer kept after this), or None."""
        self._prune()
        kept = self._kept.pop(room, None)
        return None if kept is None else kept[0]

    def _prune(self) -> None:
        horizon = time.monotonic() - self._ttl
        expired = []
        for room, (_, left_at) in self._kept.items():
            if left_at >= horizon:
                break
            expired.append(room)
        for room in expired:
            del self._kept[room]


class MemoryBroker:
    def __init__(
        self,
        on_message: MessageHandler,
        on_state: StateHandler | None = None,
        limits: HistoryLimits | None = None,
        *,
        on_control: ControlHandler | None = None,
        stats: StatsSource | None = None,
    ) -> None:
        self._on_message = on_message
        self._on_state = on_state
        self._on_control = on_control
        self._stats = stats
        self._limits = limits or HistoryLimits()
        self._subscribed: set[str] = set()
        self._rooms: dict[str, _Room] = {}
        self._silent_epochs = _SilentEpochs(min(self._limits.ttl, KEPT_SILENT_EPOCH_SECONDS))
        self._running = False

    @property
    def ready(self) -> bool:
        return self._running

    @property
    def serving(self) -> bool:
        return self._running

    def serves(self, room: str) -> bool:
        del room  # one process holds every room
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
        reserve: int = 0,
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

    async def post_message(
        self, room: str, head: bytes, prefix: bytes, reserve: int = 0
    ) -> tuple[str, int]:
        if not self.ready:
            raise BrokerUnavailable("broker stopped")
        self.publish_message(room, head, prefix)
        state = self._room(room)
        return state.epoch, state.offset

    def charge(self, owner: str, charges: Sequence[BucketCharge]) -> None:
        """Nothing to share: the node's own buckets are the only ones."""

    async def join(
        self,
        room: str,
        member: str,
        username: str,
        since: Since | None,
        announce: bytes,
        user: str | None = None,
        user_id: str | None = None,
    ) -> JoinReply:
        state = self._room(room)
        ban = state.bans.get(user) if user is not None else None
        if ban is not None:
            raise RoomBanned(ban.until_ms, ban.reason)
        state.presence[member] = PresenceEntry(username, user_id)
        self.publish(room, announce)
        size = len(state.presence)
        if since is None:
            return JoinReply(state.epoch, state.offset, NOT_REQUESTED, connections=size)
        if since.epoch != state.epoch or since.offset > state.offset:
            return JoinReply(state.epoch, state.offset, EPOCH_CHANGED, connections=size)
        missed = state.offset - since.offset
        if missed > len(state.history):
            return JoinReply(state.epoch, state.offset, TOO_OLD, connections=size)
        messages = (
            [m for _, m in list(state.history)[len(state.history) - missed :]] if missed else []
        )
        return JoinReply(state.epoch, state.offset, RECOVERED, messages, size)

    def leave(
        self,
        room: str,
        member: str,
        announce: bytes,
        user_id: str | None = None,
        *,
        keep_silent_epoch: bool = False,
    ) -> None:
        state = self._rooms.get(room)
        if state is not None:
            state.presence.pop(member, None)
            self._expire(state)
            if not state.presence and not state.history and not state.bans:
                del self._rooms[room]  # bounded memory: nothing left worth keeping
                if keep_silent_epoch and state.offset == 0:
                    self._silent_epochs.keep(room, state.epoch)
        self.publish(room, announce)

    async def resync_presence(self, rooms: dict[str, dict[str, PresenceEntry]]) -> None:
        for room, members in rooms.items():
            self._room(room).presence.update(members)

    async def history(self, room: str, limit: int) -> HistoryReply:
        state = self._room(room)
        messages = [m for _, m in state.history]
        return HistoryReply(state.epoch, state.offset, messages[-limit:] if limit else [])

    async def history_page(
        self, room: str, after: int, count: int, size: int, *, total: bool = False
    ) -> HistoryPage:
        state = self._room(room)
        held = state.history
        if after < 0:
            after = state.offset - min(-after, len(held))
        first = len(held) - (state.offset - after)  # index of offset after + 1
        out: list[bytes] = []
        size_after = 0
        if after < state.offset and first >= 0:
            if total:
                size_after = sum(len(held[index][1]) for index in range(first, len(held)))
            used = 0
            for index in range(first, min(first + count, len(held))):
                message = held[index][1]
                if out and used + len(message) > size:
                    break
                out.append(message)
                used += len(message)
        return HistoryPage(state.epoch, state.offset, after, out, size_after)

    async def presence(self, room: str) -> RoomPresence:
        state = self._rooms.get(room)
        present: RoomPresence = {}
        for username, user_id in state.presence.values() if state is not None else ():
            present.setdefault(username, []).append(user_id)
        return present

    def _room(self, room: str) -> _Room:
        state = self._rooms.get(room)
        if state is None:
            epoch = self._silent_epochs.take(room)
            state = self._rooms[room] = _Room() if epoch is None else _Room(epoch=epoch)
        self._expire(state)
        return state

    def _expire(self, state: _Room) -> None:
        horizon = time.monotonic() - self._limits.ttl
        while state.history and state.history[0][0] < horizon:
            state.held -= len(state.history.popleft()[1])
        if state.bans:
            now_ms = int(time.time() * 1000)
            for user in [u for u, ban in state.bans.items() if ban.until_ms <= now_ms]:
                del state.bans[user]

    # The server API

    async def publish_control(self, payload: bytes) -> int:
        if not self.ready:
            raise BrokerUnavailable("broker stopped")
        if self._on_control is not None:
            asyncio.get_running_loop().call_soon(self._on_control, payload)
        return 1

    async def delete_message(self, room: str, offset: int) -> str:
        state = self._room(room)
        index = len(state.history) - 1 - (state.offset - offset)
        if offset < 1 or not 0 <= index < len(state.history):
            raise NotInHistory(f"offset {offset} is not in the history of {room!r}")
        stored_at, message = state.history[index]
        tombstone = protocol.tombstone(room, offset, state.epoch)
        if message != tombstone:
            state.history[index] = (stored_at, tombstone)
            state.held += len(tombstone) - len(message)
            event = protocol.message_deleted(room, state.epoch, offset)
            self.publish(room, envelope.pack(time.time(), event))
        return state.epoch

    async def clear_history(self, room: str) -> tuple[str, int]:
        state = self._room(room)
        state.history.clear()
        state.held = 0
        event = protocol.history_cleared(room, state.epoch, state.offset)
        self.publish(room, envelope.pack(time.time(), event))
        return state.epoch, state.offset

    async def ban(self, room: str, user: str, seconds: int, reason: str) -> int:
        until_ms = int(time.time() * 1000) + seconds * 1000
        self._room(room).bans[user] = Ban(user, until_ms, reason)
        return until_ms

    async def unban(self, room: str, user: str) -> bool:
        state = self._rooms.get(room)
        return state is not None and state.bans.pop(user, None) is not None

    async def bans(self, room: str) -> list[Ban]:
        state = self._rooms.get(room)
        if state is None:
            return []
        self._expire(state)
        return sorted(state.bans.values(), key=lambda ban: ban.until_ms)[:MAX_BANS_LISTED]

    async def ban_of(self, room: str, user: str) -> Ban | None:
        state = self._rooms.get(room)
        if state is None:
            return None
        self._expire(state)
        return state.bans.get(user)

    async def active_rooms(
        self, limit: int, after: str | None
    ) -> tuple[list[RoomCounts], str | None]:
        names = sorted(r for r, s in self._rooms.items() if s.presence and (after or "") < r)
        page = [
            counts_of(r, [entry.username for entry in self._rooms[r].presence.values()])
            for r in names[:limit]
        ]
        return page, names[limit - 1] if len(names) > limit else None

    async def cluster_nodes(self) -> list[dict[str, Any]]:
        return [self._stats()] if self._stats is not None else []

    def _deliver(self, room: str, payload: bytes) -> None:
        if room in self._subscribed:
            self._on_message(room, payload)
