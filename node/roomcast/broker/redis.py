"""Redis pub/sub broker: one channel per room, the room's offsets, history and presence in Redis.

The broker's semantics (scripts, presence, heartbeat, reaper, the gap filler) are written once,
here, over a :class:`Topology`: where each command goes and which link listens to a room. The
standalone topology is one :class:`~roomcast.broker.shard.RedisShard` (two connections per node:
one pipelined command link, one subscriber link); Sentinel mode uses it on the primary Sentinel
names; Redis Cluster (:mod:`roomcast.broker.redis_cluster`) routes over one shard per primary.

- Publications are pipelined in order on one connection, so one sender's messages keep their
  order and a burst costs one write, not one round trip each.
- ``subscribe`` returns only after Redis confirmed the SUBSCRIBE, so a message sent right after
  the first join of a room on a node is never published before the node listens.
- Links reconnect with backoff; the subscriber then resubscribes every room that still has
  local members. What a link missed meanwhile is filled from history by the gap filler, or
  announced as lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, NamedTuple, Protocol, TypedDict, Unpack

import orjson
from redis.asyncio.connection import ConnectionPool
from redis.exceptions import RedisError

from roomcast.broker import (
    CONTROL_ROOM,
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
    NotRun,
    PresenceEntry,
    PublishedHandler,
    RoomBanned,
    RoomCounts,
    RoomPresence,
    StateHandler,
    StatsSource,
    counts_of,
    presence_fields,
    resp,
    scripts,
)
from roomcast.broker.deadline import SAFETY_MS, RedisClock, now_ms
from roomcast.broker.errors import describe
from roomcast.broker.fates import FateResolver, Publication
from roomcast.broker.links import (
    Command,
    Endpoint,
    OnOneLoop,
    PubSub,
    ReconnectDelay,
    Settle,
    TryAgain,
    connection_options,
)
from roomcast.broker.live_gaps import LiveGaps
from roomcast.broker.memory import new_epoch
from roomcast.broker.shard import RedisShard, ShardEvents, watch
from roomcast.wire import envelope, protocol
from roomcast.wire.recovery import Since

log = logging.getLogger("roomcast.broker.redis")

CHANNEL_PREFIX: Final = "roomcast:room:"
DEFAULT_TIMEOUT: Final = 5.0
DEFAULT_PRESENCE_TTL: Final = 15.0
REAPED_PREFIX: Final = b"rc:reaped:"  # a reaped node instance, kept a day
NODES_KEY: Final = b"rc:nodes"  # zset: node instance -> last heartbeat (ms)
# A room's messages per second over all nodes, and its burst (settings override it).
DEFAULT_ROOM_MESSAGE_RATE: Final = (100.0, 200)
_PREFIX_LENGTH: Final = len(CHANNEL_PREFIX)
_TRY_AGAIN_DELAY: Final = 0.05  # an HTTP post refused by a half-migrated slot is sent again


@functools.lru_cache(maxsize=8192)
def channel_for(room: str) -> bytes:
    # Called for every publication: busy rooms reuse the encoded name instead of rebuilding it.
    return (CHANNEL_PREFIX + room).encode()


def _room_of(channel: bytes) -> str:
    return channel[_PREFIX_LENGTH:].decode()


CLASSIC_PUBSUB: Final = PubSub(
    subscribe=b"SUBSCRIBE",
    unsubscribe=b"UNSUBSCRIBE",
    message=b"message",
    subscribed=b"subscribe",
    unsubscribed=b"unsubscribe",
    batch=512,  # a reconnect resubscribes thousands of rooms in a few commands
    room_of=_room_of,
)


class Answer(NamedTuple):
    """A request's reply, and whether a slot's importing node served it (Redis Cluster's ASK,
    while this node does not listen there yet); always False outside a cluster."""

    reply: Any
    via_importing: bool = False


class Topology(Protocol):
    """Where each Redis command goes, and who listens to a room: the broker's only view of its
    connections. Every command names the key it touches (a cluster routes by its hash slot)."""

    scripts: scripts.ScriptSet
    publish_command: bytes
    clock: RedisClock  # Redis's clock as estimated here: the publish deadlines are in it

    @property
    def ready(self) -> bool: ...

    def channel(self, room: str) -> bytes: ...

    def shards(self) -> Iterable[RedisShard]:
        """Every shard now open (the watchdog, the barrier and the reconnect count use them)."""

    def start(self) -> None: ...

    async def stop(self) -> None: ...

    def command(self, key: bytes, command: Command) -> None: ...

    async def request(self, key: bytes, data: bytes, *, publishes: bool = False) -> Answer: ...

    def connected_for(self, key: bytes) -> bool: ...

    def listening(self, room: str) -> bool:
        """False while members here wait for the room but Redis has not confirmed our
        subscription (the link is down or resubscribing): a message acknowledged now would
        reach them only through the gap filler, so it is refused instead."""

    async def subscribe(self, room: str) -> None: ...

    def unsubscribe(self, room: str) -> None: ...


# Builds the broker's topology, given what its links must tell the broker.
TopologyFactory = Callable[[ShardEvents], Topology]


class Standalone:
    """One Redis server (standalone, or the primary Sentinel names): one shard for everything.
    Fenced scripts (a new epoch under a new `master_replid`): a standalone Redis restarted on an
    older snapshot has lost its last writes and would hand their offsets out again."""

    scripts: scripts.ScriptSet = scripts.FENCED
    publish_command: bytes = b"PUBLISH"

    def __init__(
        self,
        pool: ConnectionPool,
        timeout: float,
        reconnect: ReconnectDelay | None,
        events: ShardEvents,
    ) -> None:
        endpoint = Endpoint(pool, timeout, reconnect or ReconnectDelay())
        self.shard = RedisShard.open("", endpoint, self.scripts.all, CLASSIC_PUBSUB, events)
        self._commands = self.shard.commands
        self.clock = self._commands.clock
        self._subscriber = self.shard.subscriber

    @property
    def ready(self) -> bool:
        return self.shard.connected

    def channel(self, room: str) -> bytes:
        return channel_for(room)

    def shards(self) -> Iterable[RedisShard]:
        return (self.shard,)

    def start(self) -> None:
        self.shard.start()

    async def stop(self) -> None:
        await self.shard.stop()

    def command(self, key: bytes, command: Command) -> None:
        self._commands.command(command)

    async def request(self, key: bytes, data: bytes, *, publishes: bool = False) -> Answer:
        return Answer(await self._commands.request(data))

    def connected_for(self, key: bytes) -> bool:
        return self._commands.connected

    def listening(self, room: str) -> bool:
        channel = channel_for(room)
        subscriber = self._subscriber
        return channel not in subscriber.wanted or channel in subscriber.confirmed

    async def subscribe(self, room: str) -> None:
        await self._subscriber.subscribe(channel_for(room))

    def unsubscribe(self, room: str) -> None:
        self._subscriber.unsubscribe(channel_for(room))


def _publishing(done: asyncio.Future[tuple[str, int]]) -> PublishedHandler:
    def published(epoch: str, offset: int) -> None:
        if not done.done():
            done.set_result((epoch, offset))

    return published


def _failing(done: asyncio.Future[Any]) -> FailureHandler:
    def failed(error: BrokerUnavailable) -> None:
        if not done.done():
            done.set_exception(error)

    return failed


def _charged(charges: Sequence[BucketCharge]) -> Settle:
    def settle(reply: Any, error: Exception | None) -> None:
        if error is None:
            for charge, level in zip(charges, reply, strict=True):
                charge.on_level(int(level) / 1000)

    return settle


def _failure_only(on_failure: FailureHandler | None) -> Settle | None:
    if on_failure is None:
        return None

    def settle(_reply: Any, error: Exception | None) -> None:
        if error is not None:
            on_failure(error if isinstance(error, BrokerUnavailable) else BrokerUnavailable())

    return settle


class RedisOptions(TypedDict, total=False):
    """What every Redis broker takes besides where Redis is (keyword arguments, all optional)."""

    timeout: float  # seconds for a connection, a reply, a confirmation (DEFAULT_TIMEOUT)
    reconnect: ReconnectDelay | None  # waits between a link's connection attempts
    limits: HistoryLimits | None  # history kept per room
    instance: str  # this node's name among live nodes; a fresh one by default
    presence_ttl: float  # seconds a silent node's members stay listed (DEFAULT_PRESENCE_TTL)
    on_resync: Callable[[], None] | None  # Redis lost this node's presence: put it back
    # A room's messages per second over all nodes, and burst (DEFAULT_ROOM_MESSAGE_RATE)
    room_message_rate: tuple[float, int]
    on_control: ControlHandler | None  # orders of the server API, from the control channel
    stats: StatsSource | None  # this node's figures, published at each heartbeat


class RedisBroker(OnOneLoop):
    """The broker over Redis: standalone at ``url``, or over the ``topology`` a Sentinel or
    Cluster broker builds instead."""

    def __init__(
        self,
        url: str,
        on_message: MessageHandler,
        on_state: StateHandler | None = None,
        *,
        topology: TopologyFactory | None = None,
        **options: Unpack[RedisOptions],
    ) -> None:
        timeout = options.get("timeout", DEFAULT_TIMEOUT)
        self._limits = options.get("limits") or HistoryLimits()
        # Seconds (as script arguments) a room without messages keeps its counter and epoch:
        # after its last join while it has members, and after its last member's leave.
        ttl = self._limits.ttl
        self._silent_room_ttl = b"%d" % max(1, int(ttl))
        self._kept_silent_epoch_ttl = b"%d" % max(1, int(min(ttl, KEPT_SILENT_EPOCH_SECONDS)))
        self._instance = options.get("instance") or new_epoch()
        self._rooms_key = f"rc:node:{self._instance}:rooms".encode()
        self._presence_ttl = options.get("presence_ttl", DEFAULT_PRESENCE_TTL)
        rate, burst = options.get("room_message_rate", DEFAULT_ROOM_MESSAGE_RATE)
        self._room_rate = (b"%r" % float(rate), b"%d" % burst)
        self._on_resync = options.get("on_resync")
        # Set when others reaped this node during a stall (a pause past the presence TTL): the
        # next resync announces its members again, since the others were told they left.
        self._reaped = False
        self._on_control = options.get("on_control")
        self._stats = options.get("stats")
        self._stats_key = f"rc:node:{self._instance}:stats".encode()
        self._control_task: asyncio.Task[None] | None = None
        self._control_listening = False
        self._links_changed = asyncio.Event()
        self._timeout = timeout
        self._on_state = on_state
        self._watchdog: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._was_ready = False
        # Rooms with members here whose last index write failed: their next join here writes
        # it again, whoever else is in the room (see _index).
        self._unlisted: set[str] = set()
        # Rooms' chat streams pass through here: whatever a subscriber link missed (dropped and
        # re-made, slot moved, Redis restarted) is filled from history or announced as lost.
        self.gaps = LiveGaps(on_message, self._read_history, self._limits.size, 3 * timeout)
        if topology is None:
            pool = ConnectionPool.from_url(url, **connection_options(timeout))
            topology = functools.partial(Standalone, pool, timeout, options.get("reconnect"))
        self.topology = topology(
            ShardEvents(
                message=self._received,
                # A room's first subscription has nothing to recheck yet (the gap filler knows
                # no offset of it); a later one (link re-made, slot moved) may have missed some.
                recheck=self.gaps.recheck,
                changed=self._report_state,
                commands_up=self._list_this_node,
            )
        )
        self._scripts = self.topology.scripts
        self._publish_head = resp.head(self.topology.publish_command, 2)
        self._timeout_ms = timeout * 1000
        # Chat messages whose reply was lost: their fate, learnt once their deadline is over.
        self.fates = FateResolver(self._find_message, self._clock, 3 * timeout)

    def _clock(self) -> RedisClock:
        return self.topology.clock

    def _received(self, room: str, payload: bytes) -> None:
        if room == CONTROL_ROOM:
            if self._on_control is not None:
                self._on_control(payload)
            return
        self.gaps.receive(room, payload)

    def _command(
        self, key: bytes, data: bytes, settle: Settle | None = None, *, publishes: bool = False
    ) -> None:
        self.topology.command(key, Command(data, settle, publishes=publishes))

    async def _request(self, key: bytes, data: bytes) -> Any:
        return (await self.topology.request(key, data)).reply

    def _list_this_node(self) -> None:
        # Listed among live nodes before any join of ours can reach Redis, so that even a
        # node killed before its first heartbeat leaves no unreapable members behind.
        self._command(NODES_KEY, self._heartbeat_command())

    async def _barrier(self) -> None:
        """Return once every command queued so far was answered, on every link."""
        await asyncio.gather(
            *(shard.commands.request(resp.PING) for shard in self.topology.shards())
        )

    def _report_state(self) -> None:
        self._links_changed.set()
        ready = self.ready
        if ready != self._was_ready:
            self._was_ready = ready
            if self._on_state is not None:
                self._on_state(ready)
            if ready:
                self._publish_stats()  # listed as ready now, not a heartbeat later

    @property
    def ready(self) -> bool:
        return self.topology.ready and self._control_listening

    @property
    def serving(self) -> bool:
        # In Cluster mode one shard down leaves the others' rooms working, on every node alike;
        # the control subscription stays required (the server API's orders must be heard).
        shards = self.topology.shards()
        return self.ready or (self._control_listening and any(s.connected for s in shards))

    def serves(self, room: str) -> bool:
        channel = self.topology.channel(room)
        return self.ready or (self._control_listening and self.topology.connected_for(channel))

    @property
    def reconnects(self) -> int:
        return sum(shard.reconnects for shard in self.topology.shards())

    def refusals(self) -> Counter[str]:
        """Error replies to commands, by kind (errors.refusal_kind), over every shard."""
        return sum((shard.commands.refusals for shard in self.topology.shards()), Counter())

    async def start(self) -> None:
        self.topology.start()
        shards = self.topology.shards
        self._watchdog = asyncio.create_task(watch(shards, self._timeout), name="redis-watchdog")
        self._heartbeat = asyncio.create_task(self._beat(), name="redis-heartbeat")
        self._control_task = asyncio.create_task(self._listen_control(), name="redis-control")

    async def _listen_control(self) -> None:
        """Subscribe the control channel once; the links keep it through every reconnect.
        The node is not ready before: an order published meanwhile would miss it."""
        while True:
            self._links_changed.clear()
            try:
                await self.topology.subscribe(CONTROL_ROOM)
            except asyncio.CancelledError:
                raise
            except (BrokerUnavailable, RedisError):
                # Again as soon as a link comes up (at the latest in a second).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._links_changed.wait(), 1.0)
                continue
            self._control_listening = True
            self._report_state()
            return

    async def stop(self) -> None:
        for task in (self._watchdog, self._heartbeat, self._control_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.topology.connected_for(NODES_KEY):
            # A clean stop is not a death: nothing for the others to reap.
            with contextlib.suppress(BrokerUnavailable):
                await self._request(
                    NODES_KEY, resp.command(b"ZREM", NODES_KEY, self._instance.encode())
                )
                await self._request(self._rooms_key, resp.command(b"DEL", self._rooms_key))
                await self._request(self._stats_key, resp.command(b"DEL", self._stats_key))
        await self.gaps.stop()
        await self.fates.stop()
        await self.topology.stop()

    async def subscribe(self, room: str) -> None:
        self.gaps.track(room)
        await self.topology.subscribe(room)

    def unsubscribe(self, room: str) -> None:
        self.gaps.forget(room)
        self._unlisted.discard(room)
        self.topology.unsubscribe(room)
        self._command(self._rooms_key, resp.command(b"SREM", self._rooms_key, room.encode()))

    def publish(self, room: str, payload: bytes, on_failure: FailureHandler | None = None) -> None:
        channel = self.topology.channel(room)
        self._command(
            channel,
            self._publish_head + resp.bulk(channel) + resp.bulk(payload),
            _failure_only(on_failure),
            publishes=True,
        )

    def publish_message(
        self,
        room: str,
        head: bytes,
        prefix: bytes,
        on_failure: FailureHandler | None = None,
        on_published: PublishedHandler | None = None,
        reserve: int = 0,
    ) -> None:
        if not self.topology.listening(room):
            if on_failure is not None:
                unheard = BrokerUnavailable("this node is not subscribed to the room yet")
                self.loop.call_soon(on_failure, unheard)
            return
        deadline = self.topology.clock.deadline(now_ms(), self._timeout_ms)
        publication = Publication(
            self.fates, room, prefix, self.gaps.position(room), deadline, on_published, on_failure
        )
        seq = scripts.room_keys(room)[0]
        self._command(
            seq,
            self._publish_message_script(room, head, prefix, deadline, reserve),
            publication.settle,
            publishes=True,
        )

    async def post_message(
        self, room: str, head: bytes, prefix: bytes, reserve: int = 0
    ) -> tuple[str, int]:
        # No timer of its own: every publication settles (reply, refusal, or its fate learnt
        # within the resolver's patience after its deadline), and only that answer is true.
        retry_until = self.loop.time() + self._timeout
        while True:
            done: asyncio.Future[tuple[str, int]] = self.loop.create_future()
            self.publish_message(room, head, prefix, _failing(done), _publishing(done), reserve)
            try:
                return await done
            except TryAgain:
                if self.loop.time() + _TRY_AGAIN_DELAY > retry_until:
                    raise
                await asyncio.sleep(_TRY_AGAIN_DELAY)

    def charge(self, owner: str, charges: Sequence[BucketCharge]) -> None:
        # The owner's buckets share its hash tag: one script, one slot, even on Redis Cluster.
        keys = tuple(scripts.client_rate_key(owner, charge.kind) for charge in charges)
        arguments = tuple(
            part
            for charge in charges
            for part in (
                b"%d" % charge.cost,
                b"%r" % float(charge.rate),
                b"%d" % charge.burst,
                b"%d" % charge.debt,
            )
        )
        self._command(
            keys[0], resp.evalsha(self._scripts.charge.sha, keys, arguments), _charged(charges)
        )

    def _publish_message_script(
        self, room: str, head: bytes, prefix: bytes, deadline_ms: int, reserve: int = 0
    ) -> bytes:
        seq, epoch, history, _ = scripts.room_keys(room)
        limits = self._limits
        meta_ttl = b"%d" % max(1, int(limits.meta_ttl))
        # The room's bucket goes last, in keys and arguments (see scripts.room_limited).
        return resp.evalsha(
            self._scripts.publish_message.sha,
            (seq, epoch, history, scripts.history_bytes_key(room), scripts.room_rate_key(room)),
            (
                self.topology.channel(room),
                head,
                prefix,
                b"%d" % limits.size,
                b"%d" % max(1, int(limits.ttl)),
                meta_ttl,
                new_epoch().encode(),
                b"%d" % limits.bytes,
                b"%d" % deadline_ms,
                meta_ttl,  # the room's lifetime, for its bucket (see scripts.room_limited)
                b"%d" % reserve,
                *self._room_rate,
            ),
        )

    def _join_deadline(self) -> int:
        # Before the node's own timer on the request fires (minus the clock estimate's error):
        # a join that runs at all runs while the node still waits for it.
        clock = self.topology.clock
        return clock.deadline(now_ms(), self._timeout_ms - clock.error_ms - SAFETY_MS)

    async def _find_message(self, publication: Publication) -> Any:
        seq, epoch, history, _ = scripts.room_keys(publication.room)
        return await self._request(
            seq,
            resp.evalsha(
                self._scripts.find_message.sha,
                (seq, epoch, history),
                (
                    publication.prefix,
                    publication.known_epoch.encode(),
                    b"%d" % publication.known_last,
                ),
            ),
        )

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
        seq, epoch, history, presence = scripts.room_keys(room)
        ban = scripts.ban_keys(room, user if user is not None else username)[0]
        # The node's room list rides in the same write: one round trip for the whole join.
        self._command(self._rooms_key, resp.command(b"SADD", self._rooms_key, room.encode()))
        answer = await self.topology.request(
            seq,
            resp.evalsha(
                self._scripts.join.sha,
                # The ban key (in the room's slot) is named, not declared: a declared key that
                # does not exist makes a slot's importing node answer TRYAGAIN, and a ban key
                # mostly does not exist, so every join would fail for a whole slot migration.
                (seq, epoch, history, presence),
                (
                    self.topology.channel(room),
                    announce,
                    presence_fields.field(member, user_id),
                    username.encode(),
                    b"%d" % (since.offset if since else -1),
                    (since.epoch if since else "").encode(),
                    new_epoch().encode(),
                    self._silent_room_ttl,
                    b"%d" % self._join_deadline(),
                    ban,
                ),
            ),
            publishes=True,
        )
        if answer.reply[0] == b"banned":
            raise RoomBanned.from_record(answer.reply[1])
        epoch_value, latest, status, missed, joined_at = answer.reply[:5]
        # The room's size after this join (big rooms); a script of an older node has none.
        connections = int(answer.reply[5]) if len(answer.reply) > 5 else None
        if status == b"late":
            raise NotRun("redis ran the join past its deadline: not joined")
        if connections is None or connections == 1 or room in self._unlisted:
            self._index(room, joined_at)
        self.gaps.baseline(room, epoch_value.decode(), int(latest))
        if answer.via_importing:
            # The importing node published the announcement where this node does not listen
            # yet; the node waits for it as its join point, so it is handed over here.
            self.gaps.receive(room, announce)
        return JoinReply(
            epoch_value.decode(),
            int(latest),
            status.decode(),
            list(reversed(missed)),
            connections,
        )

    def _index(self, room: str, joined_at: int) -> None:
        """List ``room`` in the rooms index, stamped with the join that found it empty.

        Only that join writes: Redis runs a room's joins and leaves one at a time, so every
        leave that sees the room empty is followed by a join that finds it empty (presence 1
        after it), stamped later than that leave; a join into an occupied room comes after
        such a join with no empty moment between, and its write changed nothing the leaves'
        check reads. (Each join wrote: a write to the index's one shard per join cluster-wide,
        and on a node a system call and a command of its own per join.) A write that failed
        is written again by the room's next join here, as every join used to repair it."""

        def settle(reply: Any, error: Exception | None) -> None:
            if error is None:
                self._unlisted.discard(room)
            elif self.gaps.tracks(room):  # bounded: rooms with members on this node
                self._unlisted.add(room)

        self._command(
            scripts.ROOMS_INDEX,
            resp.evalsha(
                self._scripts.index_room.sha,
                (scripts.ROOMS_INDEX, scripts.ROOMS_JOINED),
                (room.encode(), b"%d" % joined_at),
            ),
            settle,
        )

    def leave(
        self,
        room: str,
        member: str,
        announce: bytes,
        user_id: str | None = None,
        *,
        keep_silent_epoch: bool = False,
    ) -> None:
        seq, epoch, _, presence = scripts.room_keys(room)
        # This node's index write for the room failed: members it leaves behind (on other
        # nodes, whose joins into the occupied room write nothing) are listed by this leave.
        unlisted = room in self._unlisted
        self._command(
            presence,
            resp.evalsha(
                self._scripts.leave.sha,
                (presence, seq, epoch),
                (
                    self.topology.channel(room),
                    announce,
                    presence_fields.field(member, user_id),
                    self._kept_silent_epoch_ttl if keep_silent_epoch else b"0",
                ),
            ),
            functools.partial(self._left, room, unlisted),
            publishes=True,
        )

    def _left(self, room: str, unlisted: bool, reply: Any, error: Exception | None) -> None:
        if error is not None:
            return
        if int(reply[0]) == 0:
            self._unindex(room, int(reply[1]))
        elif unlisted:
            self._index(room, int(reply[1]))

    def _unindex(self, room: str, seen_empty_at: int) -> None:
        """The room was seen empty at that time: it leaves the listing unless joined since."""
        self._command(
            scripts.ROOMS_INDEX,
            resp.evalsha(
                self._scripts.unindex_room.sha,
                (scripts.ROOMS_INDEX, scripts.ROOMS_JOINED),
                (room.encode(), b"%d" % seen_empty_at),
            ),
        )

    async def resync_presence(self, rooms: dict[str, dict[str, PresenceEntry]]) -> None:
        announce, self._reaped = self._reaped, False
        prefix = self._instance.encode() + b"-"
        listed = await self._request(self._rooms_key, resp.command(b"SMEMBERS", self._rooms_key))
        stale = {raw.decode() for raw in listed} - rooms.keys()
        for room in (*rooms, *stale):
            members = rooms.get(room, {})
            pairs = [
                part
                for member, (username, user_id) in members.items()
                for part in (presence_fields.field(member, user_id), username.encode())
            ]
            presence = scripts.room_keys(room)[3]
            self._command(
                presence, resp.evalsha(self._scripts.resync.sha, (presence,), (prefix, *pairs))
            )
            if announce:
                for member, (username, user_id) in members.items():
                    event = protocol.user_joined(room, username, user_id)
                    self.publish(room, envelope.pack(time.time(), event, member))
            if members:
                # Redis may have lost the rooms index with everything else: list it again.
                self._command(
                    scripts.ROOMS_INDEX,
                    resp.evalsha(
                        self._scripts.index_room.sha,
                        (scripts.ROOMS_INDEX, scripts.ROOMS_JOINED),
                        (room.encode(), b"0"),
                    ),
                )
            key_command = b"SADD" if members else b"SREM"
            self._command(
                self._rooms_key, resp.command(key_command, self._rooms_key, room.encode())
            )
        await self._barrier()  # all of the above is done

    async def history(self, room: str, limit: int) -> HistoryReply:
        seq, epoch, history, _ = scripts.room_keys(room)
        reply = await self._request(
            seq, resp.evalsha(self._scripts.history.sha, (seq, epoch, history), (b"%d" % limit,))
        )
        epoch_value, latest, messages = reply
        return HistoryReply(epoch_value.decode(), int(latest), list(reversed(messages)))

    async def history_page(
        self, room: str, after: int, count: int, size: int, *, total: bool = False
    ) -> HistoryPage:
        seq, epoch, history, _ = scripts.room_keys(room)
        reply = await self._request(
            seq,
            resp.evalsha(
                self._scripts.history_range.sha,
                (seq, epoch, history),
                (b"%d" % after, b"%d" % count, b"%d" % size, b"1" if total else b"0"),
            ),
        )
        epoch_value, latest, resolved, messages, size_after = reply
        return HistoryPage(
            epoch_value.decode(), int(latest), int(resolved), list(messages), int(size_after)
        )

    async def presence(self, room: str) -> RoomPresence:
        presence = scripts.room_keys(room)[3]
        reply = await self._request(presence, resp.command(b"HGETALL", presence))
        return presence_fields.tally(reply)

    async def _read_history(self, room: str, limit: int) -> HistoryReply:
        return await self.history(room, limit)

    async def _beat(self) -> None:
        """Tell the others this node lives; reap the members of nodes that stopped telling."""
        interval = self._presence_ttl / 3
        instance = self._instance.encode()
        ttl_ms = int(self._presence_ttl * 1000)
        # Since when (ms) every heartbeat of ours went through; None: the last one did not.
        # What kept ours from Redis (an outage, a stall, writes refused over maxmemory) kept
        # everyone's: a node is judged dead only once we have beaten a whole TTL ourselves,
        # so that the live ones had their chance too. Judged at once, the first node to beat
        # again reaped every other, whose members got user_left then user_joined.
        beating_since: int | None = None
        while True:
            try:
                await asyncio.sleep(interval)
                if not self.topology.connected_for(NODES_KEY):
                    beating_since = None
                    continue
                added, now_ms = await self._request(NODES_KEY, self._heartbeat_command())
                if beating_since is None:
                    beating_since = now_ms
                if added == 1 and self._on_resync is not None:
                    # Our entry was gone: Redis lost its data, or others reaped us during a stall.
                    reaped_key = REAPED_PREFIX + instance
                    gone = await self._request(reaped_key, resp.command(b"DEL", reaped_key))
                    self._reaped = bool(gone)
                    self._on_resync()
                self._publish_stats()
                if now_ms - beating_since < ttl_ms:
                    continue
                horizon = now_ms - ttl_ms
                dead = await self._request(
                    NODES_KEY, resp.command(b"ZRANGEBYSCORE", NODES_KEY, b"-inf", b"%d" % horizon)
                )
                for other in dead:
                    if other != instance:
                        await self._reap(other)
            except asyncio.CancelledError:
                raise
            except (BrokerUnavailable, RedisError) as exc:
                beating_since = None
                log.warning("presence heartbeat failed", extra={"error": describe(exc)})
            except Exception:
                beating_since = None
                log.exception("presence heartbeat failed")

    def _heartbeat_command(self) -> bytes:
        """This node's entry in the live nodes' registry, at Redis's time (see HEARTBEAT)."""
        script = self._scripts.heartbeat
        return resp.evalsha(script.sha, (NODES_KEY,), (self._instance.encode(),))

    def _publish_stats(self) -> None:
        if self._stats is None:
            return
        # Outlives a few missed heartbeats, not a dead node by much.
        ttl = b"%d" % max(1, int(self._presence_ttl * 2))
        body = orjson.dumps(self._stats())
        self._command(self._stats_key, resp.command(b"SET", self._stats_key, body, b"EX", ttl))

    async def _reap(self, dead: bytes) -> None:
        claim_key = b"rc:reap:" + dead
        claim = await self._request(
            claim_key,
            # Held one TTL, not longer: a reap cut short (this node died, Redis failed over
            # before it was replicated) is taken up again by the next heartbeat after it.
            resp.command(
                b"SET",
                claim_key,
                self._instance.encode(),
                b"NX",
                b"EX",
                b"%d" % max(1, math.ceil(self._presence_ttl)),
            ),
        )
        if claim is None:
            return  # another node is on it
        rooms_key = b"rc:node:" + dead + b":rooms"
        rooms = await self._request(rooms_key, resp.command(b"SMEMBERS", rooms_key))
        head = envelope.head(time.time())
        removed = 0
        for raw_room in rooms:
            room = raw_room.decode()
            seq, epoch, _, presence = scripts.room_keys(room)
            # One script per room: each touches a single slot, as Redis Cluster requires.
            answer = await self.topology.request(
                presence,
                resp.evalsha(
                    self._scripts.reap.sha,
                    (presence, seq, epoch),
                    (
                        self.topology.channel(room),
                        head,
                        dead + b"-",
                        raw_room,
                        self._kept_silent_epoch_ttl,
                    ),
                ),
                publishes=True,
            )
            removed += int(answer.reply)
        await self._request(rooms_key, resp.command(b"DEL", rooms_key))
        # Before the ZREM: a node that was only paused sees both, and announces its members
        # again (their user_left went out just now).
        reaped_key = REAPED_PREFIX + dead
        await self._request(reaped_key, resp.command(b"SET", reaped_key, b"1", b"EX", b"86400"))
        await self._request(NODES_KEY, resp.command(b"ZREM", NODES_KEY, dead))
        log.warning(
            "reaped a dead node's members", extra={"dead_node": dead.decode(), "members": removed}
        )

    # The server API

    async def publish_control(self, payload: bytes) -> int:
        channel = self.topology.channel(CONTROL_ROOM)
        command = resp.command(self.topology.publish_command, channel, payload)
        return int(await self._request(channel, command))

    def _history_keys(self, room: str) -> tuple[bytes, ...]:
        seq, epoch, history, _ = scripts.room_keys(room)
        return seq, epoch, history, scripts.history_bytes_key(room)

    async def delete_message(self, room: str, offset: int) -> str:
        keys = self._history_keys(room)
        head = envelope.head(time.time())
        channel = self.topology.channel(room)
        epoch, outcome = await self._request(
            keys[0],
            resp.evalsha(
                self._scripts.delete_message.sha,
                keys,
                (channel, head, room.encode(), b"%d" % offset),
            ),
        )
        if int(outcome) < 0:
            raise NotInHistory(f"offset {offset} is not in the history of {room!r}")
        return str(epoch.decode())

    async def clear_history(self, room: str) -> tuple[str, int]:
        keys = self._history_keys(room)
        head = envelope.head(time.time())
        channel = self.topology.channel(room)
        epoch, latest = await self._request(
            keys[0],
            resp.evalsha(self._scripts.clear_history.sha, keys, (channel, head, room.encode())),
        )
        return epoch.decode(), int(latest)

    async def ban(self, room: str, user: str, seconds: int, reason: str) -> int:
        keys = scripts.ban_keys(room, user)
        until = await self._request(
            keys[0],
            resp.evalsha(
                self._scripts.ban.sha, keys, (user.encode(), b"%d" % seconds, reason.encode())
            ),
        )
        return int(until)

    async def unban(self, room: str, user: str) -> bool:
        keys = scripts.ban_keys(room, user)
        existed = await self._request(
            keys[0], resp.evalsha(self._scripts.unban.sha, keys, (user.encode(),))
        )
        return int(existed) == 1

    async def bans(self, room: str) -> list[Ban]:
        _, listed, reasons = scripts.ban_keys(room, "")
        reply = await self._request(
            listed,
            resp.evalsha(self._scripts.bans.sha, (listed, reasons), (b"%d" % MAX_BANS_LISTED,)),
        )
        return [
            Ban(reply[i].decode(), int(float(reply[i + 1])), reply[i + 2].decode())
            for i in range(0, len(reply), 3)
        ]

    async def ban_of(self, room: str, user: str) -> Ban | None:
        key = scripts.ban_keys(room, user)[0]
        value = await self._request(key, resp.command(b"GET", key))
        if value is None:
            return None
        until, _, reason = value.decode().partition("|")  # as the ban script writes it
        return Ban(user, int(until), reason)

    async def active_rooms(
        self, limit: int, after: str | None
    ) -> tuple[list[RoomCounts], str | None]:
        start = b"(" + after.encode() if after else b"-"
        names = await self._request(
            scripts.ROOMS_INDEX,
            resp.command(
                b"ZRANGEBYLEX", scripts.ROOMS_INDEX, start, b"+", b"LIMIT", b"0", b"%d" % limit
            ),
        )
        rooms = [raw.decode() for raw in names]
        replies = await asyncio.gather(*(self._room_stats(room) for room in rooms))
        page = []
        for room, (seen_at, usernames) in zip(rooms, replies, strict=True):
            if usernames:
                page.append(counts_of(room, usernames))
            else:
                self._unindex(room, seen_at)  # its last leave's own cleanup was lost
        return page, rooms[-1] if len(rooms) == limit else None

    async def _room_stats(self, room: str) -> tuple[int, list[str]]:
        presence = scripts.room_keys(room)[3]
        reply = await self._request(
            presence, resp.evalsha(self._scripts.room_stats.sha, (presence,), ())
        )
        return int(reply[0]), [raw.decode() for raw in reply[1:]]

    async def cluster_nodes(self) -> list[dict[str, Any]]:
        seconds, microseconds = await self._request(NODES_KEY, resp.TIME)
        # Redis's clock, as the heartbeats are scored (see HEARTBEAT).
        now_ms = int(seconds) * 1000 + int(microseconds) // 1000
        horizon = now_ms - int(self._presence_ttl * 1000)
        live = await self._request(
            NODES_KEY, resp.command(b"ZRANGEBYSCORE", NODES_KEY, b"%d" % horizon, b"+inf")
        )
        if self._stats is not None:
            self._publish_stats()  # this node's figures fresh, not a heartbeat old
        keys = [b"rc:node:" + instance + b":stats" for instance in live]
        bodies = await asyncio.gather(*(self._request(k, resp.command(b"GET", k)) for k in keys))
        nodes = []
        for body in bodies:
            if body is not None:
                with contextlib.suppress(orjson.JSONDecodeError):
                    figures = orjson.loads(body)
                    if isinstance(figures, dict):
                        nodes.append(figures)
        return nodes
