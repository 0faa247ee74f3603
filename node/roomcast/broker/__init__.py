"""The broker port: what the chat logic asks of whatever carries room traffic between nodes and
keeps what must outlive a node (offsets, recent history, presence). The logic above it
(:mod:`roomcast.core`) imports only this module and never touches the network.

The adapters beside it, chosen by the composition root (:mod:`roomcast.app`):
:class:`~roomcast.broker.memory.MemoryBroker` (single node, the default, and the unit-test
double), :class:`~roomcast.broker.redis.RedisBroker` (standalone Redis),
:class:`~roomcast.broker.redis_sentinel.RedisSentinelBroker` (a primary found through Sentinel)
and :class:`~roomcast.broker.redis_cluster.RedisClusterBroker` (Redis Cluster, sharded pub/sub).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, Protocol, TypeVar

from roomcast.wire.codes import RecoveryStatus
from roomcast.wire.recovery import Since

T = TypeVar("T")

# (room, payload) for each publication on a room this node subscribed to, in the broker's order.
MessageHandler = Callable[[str, bytes], None]
# Called with True when the broker becomes usable, False when it stops being usable.
StateHandler = Callable[[bool], None]
# Called when a publication was not made, with why: BrokerUnavailable (it was not published
# and never will be) or its subclass Unconfirmed (it may or may not have been); the sender must
# be told which.
FailureHandler = Callable[["BrokerUnavailable"], None]
# Called with (epoch, offset) once a chat message is published (the sender asked for an ack).
PublishedHandler = Callable[[str, int], None]
# Called with a shared bucket's level over every node (tokens; negative: overspent).
LevelHandler = Callable[[float], None]
# Called on every node with each order of the server API (roomcast.wire.control), as published.
ControlHandler = Callable[[bytes], None]
# This node's figures for the cluster listing (GET /api/cluster), asked for at each heartbeat.
StatsSource = Callable[[], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class JoinReply:
    """What the join script answered."""

    epoch: str
    offset: int  # the room's latest offset when the script ran
    status: RecoveryStatus
    missed: list[bytes] = field(default_factory=list)  # oldest first, offsets since+1 .. offset
    # The room's connections over every node right after this join (None: not known): how
    # the node tells a big room (core.bigroom).
    connections: int | None = None


class BrokerUnavailable(Exception):
    """The broker cannot take the request now (Redis down); the client gets ``unavailable``.

    For a chat message it means *not published*, and never will be (issue 14)."""


class NotRun(BrokerUnavailable):
    """Redis refused the command at once: a script it does not hold (``NOSCRIPT``), or a write
    it does not take now (``OOM`` over ``maxmemory`` with ``noeviction``, ``READONLY`` on a
    demoted primary), or a join script that found its deadline past. A script refused at its
    first write changed nothing (the join script's first write is its presence entry)."""


class Unconfirmed(BrokerUnavailable):
    """A chat message's fate could not be learnt: it was sent to Redis, the reply was lost, and
    Redis could not be asked afterwards (or its history no longer tells). It may or may not have
    been published; if it was, every member gets it like any other. The client gets
    ``unconfirmed``."""


class RoomRateLimited(BrokerUnavailable):
    """Not published, and never will be: the room's messages over every node used up its
    bucket. ``retry_after``: seconds until the room takes a message again."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"the room is receiving too many messages; retry in {retry_after:.2f} s")
        self.retry_after = retry_after


class RoomBanned(Exception):
    """The join was refused: the application banned this user from the room until ``until_ms``.
    Nothing was recorded or announced."""

    def __init__(self, until_ms: int, reason: str) -> None:
        super().__init__(reason)
        self.until_ms = until_ms
        self.reason = reason

    @classmethod
    def from_record(cls, record: bytes) -> RoomBanned:
        """From the stored ``<until ms>|<reason>``."""
        until, _, reason = record.decode().partition("|")
        return cls(int(until), reason)


class NotInHistory(Exception):
    """A deletion named an offset the room's history does not hold (never, or no longer)."""


@dataclass(frozen=True, slots=True)
class Ban:
    user: str
    until_ms: int
    reason: str


@dataclass(frozen=True, slots=True)
class RoomCounts:
    room: str
    members: int  # distinct usernames
    connections: int


def counts_of(room: str, usernames: list[str]) -> RoomCounts:
    return RoomCounts(room, len(set(usernames)), len(usernames))


class BucketCharge(NamedTuple):
    """What one node admitted against one bucket of an owner (a client, or a room) since its
    last charge: ``cost`` tokens of the bucket ``kind`` shared by every node (``rate`` tokens a
    second, up to ``burst``, down to ``-debt``); ``on_level`` gets the level left."""

    kind: str
    cost: int
    rate: float
    burst: int
    debt: int
    on_level: LevelHandler


class PresenceEntry(NamedTuple):
    """One connection in a room's presence: its name, and the user_id of events about it."""

    username: str
    user_id: str | None  # None: not known (written by a node of the release before user ids)


# Who is in a room on every node: each username, with the user_id of each of its connections
# (namesakes are several users under one name; None for a connection whose id is not known).
RoomPresence = dict[str, list[str | None]]


# Control-channel name: not a valid room name, so no room's channel can ever be it.
CONTROL_ROOM: Final = "#control"
# How long a room that never had a message keeps its counter, epoch and fence line after the
# leave of its last member (when the node keeps it): long enough for that member to come back
# with ``since`` after a dropped connection, a node's death or a page reload, and be told
# ``recovered``; short, because each such room is ~312 bytes of Redis that any client's churn
# over fresh room names leaves behind (at the history ttl, 600 s, 200 addresses at their rate
# filled the shipped maxmemory: docs/security.md).
KEPT_SILENT_EPOCH_SECONDS: Final = 60.0
MAX_BANS_LISTED: Final = 1000


async def within(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[T], timeout: float, reason: str
) -> T:
    """``await future``, failing it with BrokerUnavailable(reason) after ``timeout`` seconds.

    A timer on the future itself: asyncio.wait_for adds a second future, callbacks and a loop
    lookup to every wait, and this runs for every join and every Redis request.
    """
    timer = loop.call_later(timeout, _fail_late, future, reason, loop.time() + timeout)
    try:
        return await future
    finally:
        timer.cancel()


# A timer this late was held up by the node itself (SIGSTOP, a paused or migrated VM, a long
# loop turn), not by Redis. When the loop comes back, libuv runs due timers before the tasks
# that read the sockets: a reply Redis sent during the stall is still unread. Failed then, a
# join whose script ran was answered `unavailable` while Redis listed the member (a ghost in
# presence, its user_joined sent to the room). Such a timer gives the read loops this much
# more time, once.
STALL_LATENESS: Final = 0.05
STALL_GRACE: Final = 0.05


def _fail_late(future: asyncio.Future[Any], reason: str, due: float | None = None) -> None:
    if future.done():
        return
    loop = future.get_loop()
    if due is not None and loop.time() - due > STALL_LATENESS:
        loop.call_later(STALL_GRACE, _fail_late, future, reason)
        return
    future.set_exception(BrokerUnavailable(reason))


@dataclass(frozen=True, slots=True)
class HistoryLimits:
    size: int = 100  # messages kept per room
    ttl: float = 600.0  # seconds a room's history outlives its last message
    meta_ttl: float = 86400.0  # seconds its offset counter and epoch outlive the last message
    bytes: int = 256 * 1024  # bytes of messages kept per room (the newest always stays)


@dataclass(frozen=True, slots=True)
class HistoryReply:
    epoch: str
    offset: int
    messages: list[bytes]  # oldest first


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Part of a room's history read by offset: ``messages`` are those from offset
    ``after + 1`` on; none when history no longer holds it (or nothing came after it)."""

    epoch: str
    offset: int  # the room's latest offset
    after: int
    messages: list[bytes]  # oldest first
    # bytes of every message after ``after`` that history holds, when asked for (else 0)
    total: int = 0


class Broker(Protocol):
    @property
    def ready(self) -> bool:
        """True when subscribe and publish can succeed now."""

    @property
    def serving(self) -> bool:
        """True when some rooms can be served now: ``ready``, or in Cluster mode with some
        shard reachable (every node is as unable to serve a down shard's rooms: a readiness
        probe turning them all away would take the other shards' rooms down too)."""

    def serves(self, room: str) -> bool:
        """True when ``room``'s Redis is reachable now (in Cluster mode, its shard)."""

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
        """Queue an envelope (without offset) for every subscriber of ``room``, in order.

        Never blocks; ``on_failure`` runs (later, on the loop) if the broker cannot take it
        (best effort: live-only events carry no deadline and no fate lookup).
        """

    def publish_message(
        self,
        room: str,
        head: bytes,
        prefix: bytes,
        on_failure: FailureHandler | None = None,
        on_published: PublishedHandler | None = None,
        reserve: int = 0,
    ) -> None:
        """Publish a chat message: assign the room's next offset, complete the JSON
        (``prefix + offset + epoch``), keep it in history and publish ``head + offset\\n + json``,
        all as one atomic step. Same order as :meth:`publish`; when given,
        ``on_published(epoch, offset)`` runs once it is done. Exactly one of the two callbacks
        runs: ``on_failure(BrokerUnavailable)`` only once the message surely was not published
        and never will be (``RoomRateLimited``: a broker shared by several nodes applies the
        room's message bucket over all of them in the same step, and it refused the message),
        ``on_failure(Unconfirmed)`` when that cannot be known."""

    async def post_message(
        self, room: str, head: bytes, prefix: bytes, reserve: int = 0
    ) -> tuple[str, int]:
        """:meth:`publish_message`, awaited: returns the message's (epoch, offset) once it is
        published, or raises BrokerUnavailable or Unconfirmed with the same meaning (the HTTP
        API answers with these)."""

    def charge(self, owner: str, charges: Sequence[BucketCharge]) -> None:
        """Charge actions already admitted by this node to ``owner``'s buckets shared by every
        node, all in one step (one command: a message spends two buckets of its client). Never
        blocks; a broker of one node has nothing to share, and a charge that fails is forgotten
        (each node's own bucket still holds)."""

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
        """Record ``member`` in the room's presence (as ``username``, with ``user_id``), publish
        ``announce`` (user_joined) and read the room's epoch and latest offset, plus the
        messages missed since ``since``: one atomic step, one round trip. Raises RoomBanned,
        having done nothing, when ``user`` (a token's sub, or the username) is banned from the
        room."""

    def leave(
        self,
        room: str,
        member: str,
        announce: bytes,
        user_id: str | None = None,
        *,
        keep_silent_epoch: bool = False,
    ) -> None:
        """Drop ``member`` (joined with ``user_id``) from presence and publish ``announce``
        (user_left), atomically. When that empties a room that never had a message, its epoch
        is kept for KEPT_SILENT_EPOCH_SECONDS if ``keep_silent_epoch``, else forgotten at once."""

    async def resync_presence(self, rooms: dict[str, dict[str, PresenceEntry]]) -> None:
        """Make this node's presence entries exactly ``rooms`` (room -> member -> entry):
        after Redis lost them (restart), or kept some whose leave was lost in an outage."""

    async def history(self, room: str, limit: int) -> HistoryReply: ...

    async def history_page(
        self, room: str, after: int, count: int, size: int, *, total: bool = False
    ) -> HistoryPage:
        """The messages after offset ``after`` (negative: the last ``-after`` that history
        holds), oldest first: at most ``count``, and at most ``size`` bytes beyond the first one
        (a page of a streamed answer or catch-up); with ``total``, also the bytes of all the
        messages after ``after``."""

    async def presence(self, room: str) -> RoomPresence:
        """Usernames in the room on every node, each with the user_id of each connection."""

    # The server API (issue 16): orders for every node, and what they change in Redis.

    async def publish_control(self, payload: bytes) -> int:
        """Publish an order (roomcast.wire.control) to every node, this one included; returns
        how many nodes' subscriptions received it."""

    async def delete_message(self, room: str, offset: int) -> str:
        """Replace the message at ``offset`` by its tombstone in history and tell the room's
        members (``message_deleted``), in one step; returns the room's epoch. Raises
        NotInHistory when the history does not hold that offset."""

    async def clear_history(self, room: str) -> tuple[str, int]:
        """Empty the room's history (offsets go on from where they were) and tell its members
        (``history_cleared``); returns (epoch, latest offset)."""

    async def ban(self, room: str, user: str, seconds: int, reason: str) -> int:
        """Refuse ``user``'s joins of ``room`` for ``seconds``; returns the end (ms)."""

    async def unban(self, room: str, user: str) -> bool:
        """Lift a ban; False when there was none."""

    async def bans(self, room: str) -> list[Ban]:
        """The bans in force, soonest to end first (at most MAX_BANS_LISTED)."""

    async def ban_of(self, room: str, user: str) -> Ban | None:
        """``user``'s ban from ``room`` while it is in force (the HTTP API's check for a user
        token: a ban refuses the room's reads and posts there as it refuses joins)."""

    async def active_rooms(
        self, limit: int, after: str | None
    ) -> tuple[list[RoomCounts], str | None]:
        """Rooms with members on any node, by name, after ``after``, and where the next page
        starts (None: this was the last). A page may hold fewer than ``limit`` rooms: rooms
        found empty are skipped."""

    async def cluster_nodes(self) -> list[dict[str, Any]]:
        """Every live node's last published figures (StatsSource), this one's included."""
