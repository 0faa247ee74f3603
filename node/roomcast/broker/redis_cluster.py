"""Redis Cluster broker: sharded pub/sub (SSUBSCRIBE/SPUBLISH), one link pair per shard.

A room's channel ``rc:{room}`` and its keys ``rc:{room}:…`` share one hash slot, so its scripts
and its messages stay on the shard that owns the slot; classic PUBLISH would be copied to every
node of the cluster. Per primary this node keeps one pipelined publisher and one sharded
subscriber link (the standalone broker's ``_Link`` machinery: backoff, confirmed subscriptions,
watchdog); everything above routing (scripts, presence, heartbeat, reaper) is inherited.

Topology changes are followed, not assumed:
- the slot map comes from ``CLUSTER SLOTS`` of any reachable node (known primaries, then seeds);
- a command answered ``MOVED`` is re-sent to the named node once the map is refreshed, ``ASK``
  is re-sent there at once after ``ASKING``;
- a subscription Redis drops because its slot moved (an unprompted ``sunsubscribe``), or one
  refused with ``MOVED``, is made again on the slot's new owner;
- a primary that dies takes its links down: the map is refreshed until its replica is promoted,
  links to the new primary are opened and the rooms it serves are subscribed there.
``ready`` is False while any slot has no reachable primary. Pub/sub being at-most-once, what was
published on a shard while this node was not subscribed there is lost for live delivery only:
clients recover it from history with ``since``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from redis.asyncio.connection import ConnectionPool
from redis.exceptions import ClusterDownError, RedisError, ResponseError, TryAgainError

from roomcast.broker import (
    BrokerUnavailable,
    HistoryLimits,
    JoinReply,
    MessageHandler,
    StateHandler,
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
from roomcast.broker.redis import (
    Backoff,
    RedisBroker,
    Settle,
    _Publisher,
    _Subscriber,
    connection_options,
    describe,
    resp_command,
)
from roomcast.wire.recovery import Since

log = logging.getLogger("roomcast.broker.redis_cluster")

_MAX_REDIRECTS: Final = 5
_ASKING: Final = resp_command(b"ASKING")
_CLUSTER_SLOTS: Final = resp_command(b"CLUSTER", b"SLOTS")
_PING: Final = resp_command(b"PING")
_TRYAGAIN_DELAY: Final = 0.05  # keys of a slot half migrated: the operator's MIGRATE is under way

# Set by ``_request`` in the awaiting task's context: its command was served by a slot's
# importing node (ASK), where this node's subscribers are not listening yet.
_SERVED_BY_IMPORTING: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "served_by_importing", default=False
)


class _Moved(BrokerUnavailable):
    """A subscription was refused by a node that no longer owns its slot: retry elsewhere."""


class _TryAgain(BrokerUnavailable):
    """A multi-key command hit a slot whose keys are half migrated; it can be sent again."""


class _Call:
    """The settle callback of an awaited request, remembering whether it was served via ASK."""

    __slots__ = ("asked", "future")

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self.future = future
        self.asked = False

    def __call__(self, reply: Any, error: Exception | None) -> None:
        if self.future.done():
            return
        if error is None:
            self.future.set_result(reply)
        else:
            self.future.set_exception(error)


class _Redirected:
    """A command's settle callback, counting how often the command was redirected; ``served``
    runs once an importing node answered it (ASK), before the command's own callback."""

    __slots__ = ("hops", "inner", "served")

    def __init__(
        self, inner: Settle | None, hops: int, served: Callable[[], None] | None = None
    ) -> None:
        self.inner = inner
        self.hops = hops
        self.served = served

    def __call__(self, reply: Any, error: Exception | None) -> None:
        if error is None and self.served is not None:
            self.served()
        if self.inner is not None:
            self.inner(reply, error)


class _ShardPublisher(_Publisher):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_redirect: Any = None  # set by the broker: (Redirect, command, settle) -> None
        self.on_cluster_error: Any = None  # CLUSTERDOWN/TRYAGAIN: the map may be stale

    def handle_error_reply(self, error: ResponseError) -> None:
        redirect = redirect_of(error)
        if redirect is not None and self._inflight and self.on_redirect is not None:
            _, settle, data = self._inflight.popleft()
            self.on_redirect(redirect, data, settle)
            return
        if _is_cluster_error(error, TryAgainError, "TRYAGAIN") and self._inflight:
            # Not a failure of Redis: requests send it again, fire-and-forget commands are
            # refused (resending them later could reorder a sender's messages).
            settle = self._inflight.popleft()[1]
            if settle is not None:
                settle(None, _TryAgain(f"redis cluster: {error}"))
            return
        if _is_cluster_error(error, ClusterDownError, "CLUSTERDOWN") and self.on_cluster_error:
            self.on_cluster_error()
        super().handle_error_reply(error)


def _is_cluster_error(error: ResponseError, kind: type[ResponseError], prefix: str) -> bool:
    # redis-py's parser turns known prefixes into classes (and strips them from the text).
    return isinstance(error, kind) or str(error).startswith(prefix)


class _ShardSubscriber(_Subscriber):
    SUBSCRIBE = b"SSUBSCRIBE"
    UNSUBSCRIBE = b"SUNSUBSCRIBE"
    MESSAGE_KIND = b"smessage"
    SUBSCRIBE_KIND = b"ssubscribe"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._own_unsubscribes: Counter[bytes] = Counter()
        self.on_topology_hint: Any = None  # set by the broker: () -> None

    def room_of(self, channel: bytes) -> str:
        return room_of_channel(channel)

    def _resubscribe(self) -> None:
        # One channel per SSUBSCRIBE: channels of several slots in one command are CROSSSLOT.
        self._own_unsubscribes.clear()
        self.last_pong = self.loop.time()
        for channel in list(self.wanted):
            self._send_subscribe(channel)

    def unsubscribe(self, channel: bytes) -> None:
        if self.connected:
            self._own_unsubscribes[channel] += 1
        super().unsubscribe(channel)

    def adopt(self, channel: bytes) -> None:
        """Serve ``channel`` from now on (its slot moved here); no one awaits the confirmation."""
        self.wanted.add(channel)
        if self.connected and channel not in self.confirmed and channel not in self._requests:
            self._send_subscribe(channel)

    def drop(self, channel: bytes) -> None:
        """Forget ``channel`` without telling Redis: its slot is no longer this node's."""
        self.wanted.discard(channel)
        self.confirmed.discard(channel)
        for request in self._requests.pop(channel, ()):
            request.abandoned = True
            _fail(request.waiters, _Moved("the room's slot moved to another shard"))

    def handle_other(self, kind: bytes, reply: list[Any]) -> None:
        if kind != b"sunsubscribe" or len(reply) < 2 or reply[1] is None:
            return
        channel = reply[1]
        if self._own_unsubscribes[channel] > 0:
            self._own_unsubscribes[channel] -= 1
            if not self._own_unsubscribes[channel]:
                del self._own_unsubscribes[channel]
            return
        # Unprompted: Redis dropped us because the slot moved away. Find the new owner.
        self.confirmed.discard(channel)
        log.info("sharded subscription dropped by redis", extra={"link": self.name})
        if self.on_topology_hint is not None:
            self.on_topology_hint()

    def handle_error_reply(self, error: ResponseError) -> None:
        redirect = redirect_of(error)
        if redirect is None:
            super().handle_error_reply(error)
            return
        # The reply answers the oldest SSUBSCRIBE of that slot: refuse it, the caller retries.
        for channel, pending in list(self._requests.items()):
            if slot_of(channel) == redirect.slot and pending:
                request = pending.popleft()
                if not pending:
                    del self._requests[channel]
                _fail(request.waiters, _Moved(f"slot {redirect.slot} moved"))
                break
        if self.on_topology_hint is not None:
            self.on_topology_hint()


def _fail(waiters: list[asyncio.Future[None]], error: Exception) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_exception(error)
    waiters.clear()


@dataclass(slots=True)
class _Shard:
    address: Address
    pool: ConnectionPool
    publisher: _ShardPublisher
    subscriber: _ShardSubscriber

    @property
    def connected(self) -> bool:
        return self.publisher.connected and self.subscriber.connected


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


class RedisClusterBroker(RedisBroker):
    _scripts = scripts.SHARDED
    _publish_command = b"SPUBLISH"

    def __init__(
        self,
        seed_urls: str,
        on_message: MessageHandler,
        on_state: StateHandler | None = None,
        *,
        timeout: float = 5.0,
        backoff: Backoff | None = None,
        limits: HistoryLimits | None = None,
        instance: str = "",
        presence_ttl: float = 15.0,
        on_resync: Callable[[], None] | None = None,
    ) -> None:
        self._init_common(
            on_message, on_state, timeout, backoff, limits, instance, presence_ttl, on_resync
        )
        self._seed_pools = [
            ConnectionPool.from_url(url, **connection_options(timeout))
            for url in parse_seeds(seed_urls)
        ]
        self._map: SlotMap | None = None
        self._shards: dict[Address, _Shard] = {}
        self._by_slot: list[_Shard | None] = []
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
        self._parked: list[tuple[Address, bytes, _Redirected]] = []
        self._held: list[tuple[bytes, bytes, Settle | None]] = []
        self._fenced: set[int] = set()
        self._fences = 0
        self._publishing = tuple(
            script.sha
            for script in (
                self._scripts.publish_message,
                self._scripts.join,
                self._scripts.leave,
                self._scripts.reap,
            )
        )

    # Routing

    def _shard_for(self, key: bytes) -> _Shard | None:
        if not self._by_slot:
            return None
        return self._by_slot[slot_of(key)]

    def _command(self, key: bytes, data: bytes, settle: Settle | None) -> None:
        if self._fenced and slot_of(key) in self._fenced:
            self._held.append((key, data, settle))
            return
        shard = self._shard_for(key)
        if shard is None:
            if settle is not None:
                self.loop.call_soon(
                    settle, None, BrokerUnavailable("no redis shard serves this room now")
                )
            return
        shard.publisher.command(data, settle)

    async def _request(self, key: bytes, data: bytes) -> Any:
        loop = self.loop
        deadline = loop.time() + self._timeout
        while True:
            call = _Call(loop.create_future())
            self._command(key, data, call)
            try:
                # Redirections included: a MOVED answer is re-sent after one map refresh.
                reply = await within(
                    loop,
                    call.future,
                    max(0.0, deadline - loop.time()),
                    "redis did not answer in time",
                )
            except _TryAgain:
                if loop.time() + _TRYAGAIN_DELAY > deadline:
                    raise
                await asyncio.sleep(_TRYAGAIN_DELAY)
                continue
            if call.asked:
                _SERVED_BY_IMPORTING.set(True)
            return reply

    def _connected_for(self, key: bytes) -> bool:
        shard = self._shard_for(key)
        return shard is not None and shard.publisher.connected

    def _channel(self, room: str) -> bytes:
        return sharded_channel(room)

    def _links(self) -> list[tuple[_Publisher, _Subscriber]]:
        return [(shard.publisher, shard.subscriber) for shard in self._shards.values()]

    def _listening(self, room: str) -> bool:
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

    async def start(self) -> None:
        self._refresh_wanted.set()
        self._topology = asyncio.create_task(self._follow_topology(), name="redis-topology")
        self._start_tasks()

    async def _stop_links(self) -> None:
        await self.gaps.stop()
        stopped = BrokerUnavailable("the broker stopped")
        for _, _, settle in self._held:
            if settle is not None:
                settle(None, stopped)
        for _, _, parked in self._parked:
            parked(None, stopped)
        self._held, self._parked, self._fenced = [], [], set()
        if self._topology is not None:
            self._topology.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._topology
        shards, self._shards = list(self._shards.values()), {}
        self._by_slot = []
        await asyncio.gather(*(self._close_shard(shard) for shard in shards))
        await asyncio.gather(*self._retired, return_exceptions=True)
        for pool in self._seed_pools:
            await pool.disconnect()

    # Subscriptions

    async def subscribe(self, room: str) -> None:
        channel = sharded_channel(room)
        if channel not in self._wanted:
            self._wanted.add(channel)
            self._wanted_by_slot.setdefault(slot_of(channel), set()).add(channel)
            self.gaps.track(room)
        loop = self.loop
        deadline = loop.time() + self._timeout
        while True:
            shard = self._shard_for(channel)
            if shard is None:
                raise BrokerUnavailable("no redis shard serves this room now")
            try:
                await shard.subscriber.subscribe(channel)
            except _Moved:
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
        self.gaps.forget(room)
        for shard in self._shards.values():
            if channel in shard.subscriber.wanted:
                shard.subscriber.unsubscribe(channel)
        self._command(self._rooms_key, resp_command(b"SREM", self._rooms_key, room.encode()), None)

    # Topology

    def _request_refresh(self) -> None:
        self._refresh_wanted.set()

    async def _await_refresh(self, timeout: float) -> None:
        if self._refreshed is None or self._refreshed.done():
            self._refreshed = asyncio.get_running_loop().create_future()
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
            self._report_state()
            if self.ready:
                attempt = 0
            else:
                # A dead primary's replica takes a node timeout or so to be promoted: ask again.
                await asyncio.sleep(self._backoff.delay(min(attempt, 4)))
                attempt += 1
                self._refresh_wanted.set()

    async def _fetch_map(self) -> SlotMap:
        candidates: list[tuple[Address | None, ConnectionPool]] = [
            (shard.address, shard.pool) for shard in self._shards.values()
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
            task = asyncio.create_task(self._close_shard(shard))
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)

    def _resubscribe_lost(self) -> None:
        """Channels Redis dropped (slot moved out and back, or a refused SSUBSCRIBE): again."""
        for channel in self._wanted:
            owner = self._by_slot[slot_of(channel)] if self._by_slot else None
            if owner is not None:
                owner.subscriber.adopt(channel)

    def _open_shard(self, address: Address) -> _Shard:
        base = self._seed_pools[0]
        kwargs = dict(base.connection_kwargs, host=address.host, port=address.port)
        pool = ConnectionPool(connection_class=base.connection_class, **kwargs)
        # Scripts loaded and this node listed in rc:nodes on connect, as in standalone mode.
        publisher = self._new_publisher(pool, f"publisher {address}")
        assert isinstance(publisher, _ShardPublisher)
        publisher.on_down = self._also_refresh(publisher.on_down)
        publisher.on_redirect = self._redirect
        publisher.on_cluster_error = self._request_refresh
        subscriber = _ShardSubscriber(
            pool, self._timeout, self._backoff, self.gaps.receive, f"subscriber {address}"
        )
        subscriber.on_change = self._report_state
        subscriber.on_down = self._also_refresh(subscriber.on_down)
        subscriber.on_topology_hint = self._request_refresh
        subscriber.on_confirmed = self._subscribed_again
        publisher.start()
        subscriber.start()
        return _Shard(address, pool, publisher, subscriber)

    def _publisher_class(self) -> type[_Publisher]:
        return _ShardPublisher

    def _also_refresh(self, on_down: Callable[[], None]) -> Callable[[], None]:
        """A lost link may mean a dead primary: look for its replacement."""

        def down() -> None:
            on_down()
            self._request_refresh()

        return down

    async def _close_shard(self, shard: _Shard) -> None:
        await shard.publisher.stop()
        await shard.subscriber.stop()
        await shard.pool.disconnect()

    # Redirections

    def _redirect(self, redirect: Redirect, data: bytes, settle: Settle | None) -> None:
        hops = settle.hops + 1 if isinstance(settle, _Redirected) else 1
        inner = settle.inner if isinstance(settle, _Redirected) else settle
        if hops > _MAX_REDIRECTS:
            if inner is not None:
                inner(None, BrokerUnavailable("redis cluster keeps redirecting"))
            return
        if redirect.kind == "MOVED":
            # Re-sent once the map is refreshed, in the order the MOVED answers came.
            self._parked.append((redirect.address, data, _Redirected(inner, hops)))
            self._request_refresh()
            return
        # A slot being migrated: this one command goes to the importing node, now.
        target = self._shards.get(redirect.address)
        if target is None:
            if inner is not None:
                inner(None, BrokerUnavailable(f"ASK to unknown node {redirect.address}"))
            self._request_refresh()
            return
        if isinstance(inner, _Call):
            inner.asked = True
        served = None
        if self._wanted_by_slot.get(redirect.slot) and self._publishes(data):
            # Published on the importing node, whose subscribers we are not among yet.
            slot = redirect.slot
            served = lambda: self._recheck_slot(slot)  # noqa: E731
        target.publisher.command(_ASKING, None)
        target.publisher.command(data, _Redirected(inner, hops, served))

    def _publishes(self, data: bytes) -> bool:
        head = data[:96]
        return head.startswith(self._publish_head) or any(sha in head for sha in self._publishing)

    def _resend_parked(self) -> None:
        parked, self._parked = self._parked, []
        for address, data, settle in parked:
            target = self._shards.get(address)
            if target is None:
                settle(None, BrokerUnavailable(f"MOVED to unknown node {address}"))
            else:
                target.publisher.command(data, settle)

    def _fence_moved_slots(self, previous: list[_Shard | None]) -> None:
        """Slots whose owner changed: hold their new commands until the old owner answered
        everything sent to it before (a PING queued behind them), then send in order."""
        moved: dict[Address, tuple[_Shard, list[int]]] = {}
        for slot, (old, new) in enumerate(zip(previous, self._by_slot, strict=True)):
            if old is not None and old is not new:
                moved.setdefault(old.address, (old, []))[1].append(slot)
        loop = asyncio.get_running_loop()
        for old_shard, slots in moved.values():
            self._fenced.update(slots)
            self._fences += 1
            done = _Once(self._fence_passed)
            old_shard.publisher.command(_PING, done.settle)
            # A retired link may never answer: order matters less than progress then.
            loop.call_later(self._timeout, done)

    def _fence_passed(self) -> None:
        self._fences -= 1
        if self._fences:
            return
        self._fenced.clear()
        self._resend_parked()
        held, self._held = self._held, []
        for key, data, settle in held:
            self._command(key, data, settle)

    # Live gaps

    def _recheck_slot(self, slot: int) -> None:
        for channel in list(self._wanted_by_slot.get(slot, ())):
            self.gaps.recheck(room_of_channel(channel))

    async def join(
        self, room: str, member: str, username: str, since: Since | None, announce: bytes
    ) -> JoinReply:
        _SERVED_BY_IMPORTING.set(False)
        reply = await super().join(room, member, username, since, announce)
        if _SERVED_BY_IMPORTING.get():
            # The importing node published the announcement where this node does not listen
            # yet; the node waits for it as its join point, so it is handed over here.
            self.gaps.receive(room, announce)
        return reply


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
