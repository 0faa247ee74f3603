"""What the chat logic needs of a client connection and of the writer behind it.

The WebSocket transport (:mod:`roomcast.net.transport`) implements both; the chat logic names only
these protocols, so it never imports the layer that writes to sockets, and unit tests can hand it
plain objects.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Protocol

from roomcast.core.auth import Identity, RoomGrant
from roomcast.core.ratelimit import ConnectionBudget, RateLimiter
from roomcast.core.streams import Pusher


class Member(Protocol):
    """One client connection, as the chat logic uses it."""

    id: str
    closed: bool
    identity: Identity | None  # from its token; None in open mode
    # Per-connection limits, made by the node on the first message or typing (None before).
    message_rate: RateLimiter | None
    typing_rate: RateLimiter | None
    budget: ConnectionBudget | None  # joins, and the client's shared buckets; set on open
    inbound: RateLimiter | None  # the client's received bytes, over its connections
    client_address: str  # the peer's, or the trusted proxy's X-Forwarded-For hop
    user_id: str  # in events about this user (core.user_ids), set on open

    @property
    def client_key(self) -> str:
        """Whose connections share limits: "sub:<token subject>" or "ip:<address>"."""
        ...

    pending: list[bytes]  # frames queued for this loop turn's single write
    # Over the send bound: no room traffic until it drained and caught up (core.lag).
    lagging: bool

    def __hash__(self) -> int: ...  # members key the room registry

    def send(self, payload: bytes) -> None:
        """Queue one JSON event for this connection alone."""

    async def send_pieces(self, length: int, pieces: AsyncIterator[bytes]) -> bool:
        """Write one JSON event of ``length`` bytes in pieces, each once the client took the
        previous one (an answer larger than the send bound); True once all was handed over."""
        ...

    def fail(self, code: int, reason: str) -> None:
        """Close at once with a WebSocket close code."""

    def close(self, code: int, reason: str) -> None:
        """Close with a WebSocket close code after the frames already queued."""

    def write_pending(self) -> int:
        """Write what is queued; the number of bytes written."""

    def verify_token(self, token: str) -> Identity:
        """A refreshed token, checked as at the handshake; raises AuthError."""
        ...

    def verify_room_token(self, token: str) -> RoomGrant:
        """A join's room token, checked with the connection tokens' key; raises AuthError."""
        ...

    def adopt(self, identity: Identity) -> None:
        """Hold a refreshed token from now on: its exp decides when the connection ends."""

    @property
    def send_drained(self) -> bool:
        """Nothing waits in the node for this client beyond the transport's low-water mark."""

    def drop_slow_consumer(self, reason: str = ...) -> None:
        """Close 1013: it does not read, or fell behind further than can be made up."""


class Delivery(Pusher, Protocol):
    """Frames to members and event streams, batched per connection, written once per loop turn."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    def fan_out(self, members: Iterable[Member], frame: bytes, exclude: str) -> None:
        """The same frame object for every member but the one whose id is ``exclude``."""
