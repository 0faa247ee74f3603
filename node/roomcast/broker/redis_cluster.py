"""Redis Cluster broker: sharded pub/sub (SSUBSCRIBE/SPUBLISH), one shard per primary.

A room's channel ``rc:{room}`` and its keys ``rc:{room}:…`` share one hash slot, so its scripts
and its messages stay on the shard that owns the slot; classic PUBLISH would be copied to every
node of the cluster. Per primary this node keeps one :class:`~roomcast.broker.shard.RedisShard`
(a pipelined command link and a sharded subscriber link: backoff, confirmed subscriptions,
watchdog); :class:`ClusterTopology` routes each command by hash slot, and the broker's semantics
above routing (scripts, presence, heartbeat, reaper) are :class:`RedisBroker`'s.

Topology changes are followed, not assumed:
- the slot map comes from ``CLUSTER SLOTS`` of any reachable node (known primaries, then seeds);
- a command answered ``MOVED`` is re-sent to the named node once the map is refreshed, ``ASK``
  is re-sent there at once after ``ASKING``;
- a subscription Redis drops because its slot moved (an unprompted ``sunsubscribe``), or one
  refused with ``MOVED``, is made again on the slot's new owner;
- a primary that dies takes its links down: the map is refreshed until its replica is promoted,
  links to the new primary are opened and the rooms it serves are subscribed there.
``ready`` is False while any slot has no reachable primary. What was published on a shard while
this node was not subscribed there reaches its members through the gap filler.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import Callable, Iterable
from typing import Any, Final, Unpack

from redis.asyncio.connection import ConnectionPool
from redis.exceptions import ClusterDownError, RedisError, ResponseError, TryAgainError

from roomcast.broker import (
    BrokerUnavailable,
    MessageHandler,
    StateHandler,
    resp,
    scripts,
    within,
)
from roomcast.broker.cluster_slots import (
    SLOT_COUNT,
    Address,
    Redirect,
    SlotMap,
    redirect_of,
    room_of_channel,
    sharded_channel,
    slot_of,
)
from roomcast.broker.deadline import RedisClock
from roomcast.broker.errors import describe
from roomcast.broker.links import (
    Command,
    Endpoint,
    OnOneLoop,
    PubSub,
    ReconnectDelay,
    SlotMoved,
    TryAgain,
    connection_options,
    resolving,
)
from roomcast.broker.redis import DEFAULT_TIMEOUT, Answer, RedisBroker, RedisOptions
from roomcast.broker.shard import RedisShard, ShardEvents

log = logging.getLogger("roomcast.broker.redis_cluster")

_MAX_REDIRECTS: Final = 5
_ASKING: Final = resp.command(b"ASKING")
_CLUSTER_SLOTS: Final = resp.command(b"CLUSTER", b"SLOTS")
_TRYAGAIN_DELAY: Final = 0.05  # keys of a slot half migrated: the operator's MIGRATE is under way

SHARDED_PUBSUB: Final = PubSub(
    subscribe=b"SSUBSCRIBE",
    unsubscribe=b"SUNSUBSCRIBE",
    message=b"smessage",
    subscribed=b"ssubscribe",
    unsubscribed=b"sunsubscribe",
    batch=1,  # channels of several slots in one SSUBSCRIBE are CROSSSLOT
    room_of=room_of_channel,
)


class _TryAgain(TryAgain):
    """A multi-key command hit a slot whose keys are half migrated; it can be sent again."""


def _is_cluster_error(error: ResponseError, kind: type[ResponseError], prefix: str) -> bool:
    # redis-py's parser turns known prefixes into classes (and strips them from the text).
    return isinstance(error, kind) or str(error).startswith(prefix)


def parse_seeds(urls: str) -> list[str]:
    """``redis://a:7000,redis://b:7001`` or ``redis://:pw@a:7000,b:7001`` (host:port reuses the
    first URL's scheme, credentials and options)."""
    items = [item.strip() for item in urls.split(",") if item.strip()]
    if not items:
        raise ValueError("no seed URL")
    first = items[0]
    scheme, _, rest = first.partition("://")
    userinfo = rest.rpartition("@")[0] + "@" if "@" in rest.split("/", 1)[0] else ""
    seeds = [first]
    for item in items[1:]:
        seeds.append(item if "://" in item else f"{scheme}://{userinfo}{item}")
    return seeds


class ClusterTopology(OnOneLoop):
    """One shard per primary, each command routed by the hash slot of its key."""

    scripts: scripts.ScriptSet = scripts.CLUSTER_FENCED
    publish_command: bytes = b"SPUBLISH"

    def __init__(
        self,
        seed_pools: list[ConnectionPool],
        timeout: float,
        reconnect: ReconnectDelay | None,
        events: ShardEvents,
    ) -> None:
        self._seed_pools = seed_pools
        self._timeout = timeout
        self._reconnect = reconnect or ReconnectDelay()
        # One estimate of Redis's clock for every shard (see roomcast.broker.deadline).
        self.clock = RedisClock()
        self._recheck = events.recheck
        self._events = dataclasses.replace(
            events,
            # A lost link may mean a dead primary: look for its replacement.
            lost=self._request_refresh,
            refused=self._refused,
            slot_moved=self._request_refresh,
        )
        self._changed = events.changed
        self._map: SlotMap | None = None
        self._shards: dict[Address, RedisShard] = {}
        self._by_slot: list[RedisShard | None] = []
        self._wanted: set[bytes] = set()
        self._refresh_wanted = asyncio.Event()
        self._refreshed: asyncio.Future[None] | None = None
        self._topology: asyncio.Task[None] | None = None
        self._retired: set[asyncio.Task[None]] = set()
        self.topology_refreshes = 0
        self._wanted_by_slot: dict[int, set[bytes]] = {}
        # Order across a slot move: commands answered MOVED wait here for the new map; commands
        # for a slot whose owner just changed wait in ``_held`` until the old owner answered all
        # that was sent to it, so that no later command overtakes an earlier one.
        self._parked: list[tuple[Address, Command]] = []
        self._held: list[tuple[bytes, Command]] = []
        self._fenced: set[int] = set()
        self._fences = 0

    # Routing

    def channel(self, room: str) -> bytes:
        return sharded_channel(room)

    def shards(self) -> Iterable[RedisShard]:
        return list(self._shards.values())

    def _shard_for(self, key: bytes) -> RedisShard | None:
        if not self._by_slot:
            return None
        return self._by_slot[slot_of(key)]

    def command(self, key: bytes, command: Command) -> None:
        if self._fenced and slot_of(key) in self._fenced:
            self._held.append((key, command))
            return
        shard = self._shard_for(key)
        if shard is None:
            command.fail_soon(self.loop, BrokerUnavailable("no redis shard serves this room now"))
            return
        shard.commands.command(command)

    async def request(self, key: bytes, data: bytes, *, publishes: bool = False) -> Answer:
        loop = self.loop
        deadline = loop.time() + self._timeout
        while True:
            future: asyncio.Future[Any] = loop.create_future()
            command = Command(data, resolving(future), publishes=publishes)
            self.command(key, command)
            try:
                # Redirections included: a MOVED answer is re-sent after one map refresh.
                reply = await within(
                    loop, future, max(0.0, deadline - loop.time()), "redis did not answer in time"
                )
            except _TryAgain:
                if loop.time() + _TRYAGAIN_DELAY > deadline:
                    raise
                await asyncio.sleep(_TRYAGAIN_DELAY)
                continue
            return Answer(reply, command.asked)

    def connected_for(self, key: bytes) -> bool:
        shard = self._shard_for(key)
        return shard is not None and shard.commands.connected

    def listening(self, room: str) -> bool:
        # Not the channel's confirmation: during a slot move the new owner's SSUBSCRIBE is in
        # flight while publishing there is fine (the gap filler hands over what it misses).
        channel = sharded_channel(room)
        if channel not in self._wanted:
            return True
        shard = self._shard_for(channel)
        return shard is not None and shard.subscriber.connected

    @property
    def ready(self) -> bool:
        return (
            self._map is not None
            and self._map.complete
            and bool(self._shards)
            and all(shard.connected for shard in self._shards.values())
        )

    @property
    def shard_addresses(self) -> list[str]:
        return sorted(str(address) for address in self._shards)

    # Lifecycle

    def start(self) -> None:
        self._refresh_wanted.set()
        self._topology = asyncio.create_task(self._follow_topology(), name="redis-topology")

    async def stop(self) -> None:
        stopped = BrokerUnavailable("the broker stopped")
        for _, command in (*self._held, *self._parked):
            command.settle(None, stopped)
        self._held, self._parked, self._fenced = [], [], set()
        if self._topology is not None:
            self._topology.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._topology
        shards, self._shards = list(self._shards.values()), {}
        self._by_slot = []
        await asyncio.gather(*(shard.stop() for shard in shards))
        await asyncio.gather(*self._retired, return_exceptions=True)
        for pool in self._seed_pools:
            await pool.disconnect()

    # Subscriptions

    async def subscribe(self, room: str) -> None:
        channel = sharded_channel(room)
        if channel not in self._wanted:
            self._wanted.add(channel)
            self._wanted_by_slot.setdefault(slot_of(channel), set()).add(channel)
        loop = self.loop
        deadline = loop.time() + self._timeout
        while True:
            shard = self._shard_for(channel)
            if shard is None:
                raise BrokerUnavailable("no redis shard serves this room now")
            try:
                await shard.subscriber.subscribe(channel)
            except SlotMoved:
                if loop.time() > deadline or channel not in self._wanted:
                    raise
                await self._await_refresh(deadline - loop.time())
                continue
            if self._shard_for(channel) is shard or channel not in self._wanted:
                return
            # The slot moved while we subscribed: the topology step re-homed it; confirm there.

    def unsubscribe(self, room: str) -> None:
        channel = sharded_channel(room)
        self._wanted.discard(channel)
        slot = slot_of(channel)
        in_slot = self._wanted_by_slot.get(slot)
        if in_slot is not None:
            in_slot.discard(channel)
            if not in_slot:
                del self._wanted_by_slot[slot]
        for shard in self._shards.values():
            if channel in shard.subscriber.wanted:
                shard.subscriber.unsubscribe(channel)

    # Topology

    def _request_refresh(self) -> None:
        self._refresh_wanted.set()

    async def _await_refresh(self, timeout: float) -> None:
        if self._refreshed is None or self._refreshed.done():
            self._refreshed = self.loop.create_future()
        self._request_refresh()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._refreshed), max(0.0, timeout))

    async def _follow_topology(self) -> None:
        attempt = 0
        while True:
            await self._refresh_wanted.wait()
            self._refresh_wanted.clear()
            try:
                slot_map = await self._fetch_map()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                slot_map = None
                log.warning("redis cluster topology unknown", extra={"error": describe(exc)})
            if slot_map is not None:
                self._apply(slot_map)
            if not self._fences:
                self._resend_parked()
            if self._refreshed is not None and not self._refreshed.done():
                self._refreshed.set_result(None)
            self._changed()
            if self.ready:
                attempt = 0
            else:
                # A dead primary's replica takes a node timeout or so to be promoted: ask again.
                await asyncio.sleep(self._reconnect.delay(min(attempt, 4)))
                attempt += 1
                self._refresh_wanted.set()

    async def _fetch_map(self) -> SlotMap:
        candidates: list[tuple[Address | None, ConnectionPool]] = [
            (address, shard.pool) for address, shard in self._shards.items()
        ]
        candidates += [(None, pool) for pool in self._seed_pools]
        errors = []
        for address, pool in candidates:
            conn = pool.make_connection()  # type: ignore[no-untyped-call]
            try:
                await asyncio.wait_for(conn.connect(), self._timeout)
                await conn.send_packed_command(_CLUSTER_SLOTS, check_health=False)
                reply = await asyncio.wait_for(conn.read_response(), self._timeout)
                queried = address or Address(conn.host, int(conn.port))
                self.topology_refreshes += 1
                return SlotMap.from_cluster_slots(reply, queried)
            except (RedisError, OSError, TimeoutError, ValueError, IndexError) as exc:
                errors.append(str(exc))
            finally:
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)
        raise BrokerUnavailable(
            "no redis cluster node answered CLUSTER SLOTS: " + "; ".join(errors)
        )

    def _apply(self, slot_map: SlotMap) -> None:
        if slot_map == self._map and len(self._shards) == len(slot_map.primaries()):
            self._resubscribe_lost()
            return
        if self._map is not None:
            log.info(
                "redis cluster topology changed",
                extra={"primaries": sorted(str(a) for a in slot_map.primaries())},
            )
        self._map = slot_map
        for address in slot_map.primaries() - self._shards.keys():
            self._shards[address] = self._open_shard(address)
        previous = self._by_slot
        self._by_slot = [
            self._shards[owner] if owner is not None else None
            for owner in (slot_map.owner(slot) for slot in range(SLOT_COUNT))
        ]
        if previous:
            self._fence_moved_slots(previous)
        for channel in self._wanted:
            owner = self._by_slot[slot_of(channel)]
            for shard in self._shards.values():
                if shard is not owner and channel in shard.subscriber.wanted:
                    shard.subscriber.drop(channel)
            if owner is not None:
                owner.subscriber.adopt(channel)
        for address in list(self._shards.keys() - slot_map.primaries()):
            shard = self._shards.pop(address)
            log.info("redis shard retired", extra={"link": str(address)})
            task = asyncio.create_task(shard.stop())
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)

    def _resubscribe_lost(self) -> None:
        """Channels Redis dropped (slot moved out and back, or a refused SSUBSCRIBE): again."""
        for channel in self._wanted:
            owner = self._by_slot[slot_of(channel)] if self._by_slot else None
            if owner is not None:
                owner.subscriber.adopt(channel)

    def _open_shard(self, address: Address) -> RedisShard:
        base = self._seed_pools[0]
        kwargs = dict(base.connection_kwargs, host=address.host, port=address.port)
        pool = ConnectionPool(connection_class=base.connection_class, **kwargs)
        # Scripts loaded and this node listed in rc:nodes on connect, as in standalone mode.
        endpoint = Endpoint(pool, self._timeout, self._reconnect)
        shard = RedisShard.open(
            str(address), endpoint, self.scripts.all, SHARDED_PUBSUB, self._events, self.clock
        )
        shard.start()
        return shard

    # Redirections

    def _refused(self, error: ResponseError, command: Command | None) -> bool:
        """Error replies of a command link: redirections and half-migrated slots are ours."""
        redirect = redirect_of(error)
        if redirect is not None and command is not None:
            self._redirect(redirect, command)
            return True
        if _is_cluster_error(error, TryAgainError, "TRYAGAIN") and command is not None:
            # Not a failure of Redis: requests send it again, fire-and-forget commands are
            # refused (resending them later could reorder a sender's messages).
            command.settle(None, _TryAgain(f"redis cluster: {error}"))
            return True
        if _is_cluster_error(error, ClusterDownError, "CLUSTERDOWN"):
            self._request_refresh()  # the map may be stale
        return False

    def _redirect(self, redirect: Redirect, command: Command) -> None:
        command.redirects += 1
        command.then = None
        if command.redirects > _MAX_REDIRECTS:
            command.settle(None, BrokerUnavailable("redis cluster keeps redirecting"))
            return
        if redirect.kind == "MOVED":
            # Re-sent once the map is refreshed, in the order the MOVED answers came.
            self._parked.append((redirect.address, command))
            self._request_refresh()
            return
        # A slot being migrated: this one command goes to the importing node, now.
        target = self._shards.get(redirect.address)
        if target is None:
            command.settle(None, BrokerUnavailable(f"ASK to unknown node {redirect.address}"))
            self._request_refresh()
            return
        command.asked = True
        if command.publishes and self._wanted_by_slot.get(redirect.slot):
            # Published on the importing node, whose subscribers we are not among yet.
            command.then = functools.partial(self._recheck_slot, redirect.slot)
        target.commands.command(Command(_ASKING))
        target.commands.command(command)

    def _resend_parked(self) -> None:
        parked, self._parked = self._parked, []
        for address, command in parked:
            target = self._shards.get(address)
            if target is None:
                command.settle(None, BrokerUnavailable(f"MOVED to unknown node {address}"))
            else:
                target.commands.command(command)

    def _fence_moved_slots(self, previous: list[RedisShard | None]) -> None:
        """Slots whose owner changed: hold their new commands until the old owner answered
        everything sent to it before (a PING queued behind them), then send in order."""
        moved: dict[RedisShard, list[int]] = {}
        for slot, (old, new) in enumerate(zip(previous, self._by_slot, strict=True)):
            if old is not None and old is not new:
                moved.setdefault(old, []).append(slot)
        for old_shard, slots in moved.items():
            self._fenced.update(slots)
            self._fences += 1
            done = _Once(self._fence_passed)
            old_shard.commands.command(Command(resp.PING, done.settle))
            # A retired link may never answer: order matters less than progress then.
            self.loop.call_later(self._timeout, done)

    def _fence_passed(self) -> None:
        self._fences -= 1
        if self._fences:
            return
        self._fenced.clear()
        self._resend_parked()
        held, self._held = self._held, []
        for key, command in held:
            self.command(key, command)

    def _recheck_slot(self, slot: int) -> None:
        for channel in list(self._wanted_by_slot.get(slot, ())):
            self._recheck(room_of_channel(channel))


class _Once:
    """Calls ``action`` on the first call only (a fence passes by reply or by timeout)."""

    __slots__ = ("action", "called")

    def __init__(self, action: Callable[[], None]) -> None:
        self.action = action
        self.called = False

    def __call__(self) -> None:
        if not self.called:
            self.called = True
            self.action()

    def settle(self, _reply: Any, _error: Exception | None) -> None:
        self()


class RedisClusterBroker(RedisBroker):
    """The Redis broker over a :class:`ClusterTopology` found from ``seed_urls``."""

    def __init__(
        self,
        seed_urls: str,
        on_message: MessageHandler,
        on_state: StateHandler | None = None,
        **options: Unpack[RedisOptions],
    ) -> None:
        timeout = options.get("timeout", DEFAULT_TIMEOUT)
        seed_pools = [
            ConnectionPool.from_url(url, **connection_options(timeout))
            for url in parse_seeds(seed_urls)
        ]
        reconnect = options.get("reconnect")
        topology = functools.partial(ClusterTopology, seed_pools, timeout, reconnect)
        super().__init__(seed_urls, on_message, on_state, topology=topology, **options)
