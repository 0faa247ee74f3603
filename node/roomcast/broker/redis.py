"""Redis pub/sub broker: one channel per room, one subscriber and one publisher link per node.

Design, from the pitfalls seen with naive ports:
- Exactly two connections per node, opened by the node at start-up (never lazily by the first
  two joins at once): a join storm cannot exhaust a pool or open duplicate subscribers.
- Publications are pipelined in order on one connection, so one sender's messages keep their
  order and a burst costs one write, not one round trip each.
- ``subscribe`` returns only after Redis confirmed the SUBSCRIBE, so a message sent right after
  the first join of a room on a node is never published before the node listens.
- Both links reconnect with exponential backoff and full jitter; the subscriber then resubscribes
  every room that still has local members. Pub/sub is at-most-once: what was published while a
  link was down is lost (history and offsets are the cure, not this module).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from roomcast.broker import (
    BrokerUnavailable,
    FailureHandler,
    HistoryLimits,
    HistoryReply,
    JoinReply,
    MessageHandler,
    PublishedHandler,
    StateHandler,
    scripts,
    within,
)
from roomcast.broker.live_gaps import LiveGaps
from roomcast.broker.memory import new_epoch
from roomcast.wire import envelope
from roomcast.wire.recovery import Since

log = logging.getLogger("roomcast.broker.redis")

CHANNEL_PREFIX: Final = "roomcast:room:"
NODES_KEY: Final = b"rc:nodes"  # zset: node instance -> last heartbeat (ms)
_RESUBSCRIBE_BATCH: Final = 512


def _evalsha(script: scripts.Script, keys: tuple[bytes, ...], args: tuple[bytes, ...]) -> bytes:
    return resp_command(b"EVALSHA", script.sha, b"%d" % len(keys), *keys, *args)


@functools.lru_cache(maxsize=8192)
def channel_for(room: str) -> bytes:
    # Called for every publication: busy rooms reuse the encoded name instead of rebuilding it.
    return (CHANNEL_PREFIX + room).encode()


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def resp_command(*parts: bytes) -> bytes:
    """One command in RESP, built without redis-py's per-call packing overhead."""
    return b"*%d\r\n" % len(parts) + b"".join(_bulk(p) for p in parts)


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float = 0.05
    maximum: float = 5.0

    def delay(self, attempt: int) -> float:
        # Full jitter: nodes restarted together do not all hit Redis at the same instant.
        return random.uniform(self.initial, min(self.maximum, self.initial * 2**attempt))


class _OnOneLoop:
    """Keeps the running loop, not looked up per command: on Python 3.11 every
    asyncio.get_running_loop() is a getpid() system call (5.6 of them per connection setup)."""

    _loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop


class _Link(_OnOneLoop):
    """One Redis connection with its own reconnect loop, write queue and read loop."""

    def __init__(self, name: str, pool: ConnectionPool, timeout: float, backoff: Backoff) -> None:
        self.name = name
        self._pool = pool
        self._timeout = timeout
        self._backoff = backoff
        self._conn: AbstractConnection | None = None
        self._out: list[bytes] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connected = False
        self.on_up: Callable[[], None] = lambda: None
        self.on_down: Callable[[], None] = lambda: None
        # Told after on_up/on_down so the broker can report readiness of both links together.
        self.on_change: Callable[[], None] = lambda: None
        self.reconnects = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._supervise(), name=f"redis-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_connection()

    def send(self, data: bytes) -> None:
        """Queue raw RESP for the writer; callers check ``connected`` first."""
        self._out.append(data)
        self._wake.set()

    def abort(self) -> None:
        """Drop the connection (e.g. a reply is overdue); the supervisor reconnects."""
        if self._conn is not None:
            transport = getattr(self._conn, "_writer", None)
            if transport is not None:
                transport.transport.abort()

    def handle_reply(self, reply: Any) -> None:
        raise NotImplementedError

    def handle_error_reply(self, error: ResponseError) -> None:
        raise NotImplementedError

    async def _supervise(self) -> None:
        attempt = 0
        while True:
            try:
                conn = self._pool.make_connection()  # type: ignore[no-untyped-call]
                await asyncio.wait_for(conn.connect(), self._timeout)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as exc:
                delay = self._backoff.delay(attempt)
                attempt += 1
                log.warning(
                    "redis connect failed",
                    extra={
                        "link": self.name,
                        "error": describe(exc),
                        "retry_in_s": round(delay, 3),
                    },
                )
                await asyncio.sleep(delay)
                continue
            self._conn = conn
            self.connected = True
            if attempt or self.reconnects:
                log.info("redis connected", extra={"link": self.name, "attempts": attempt + 1})
            attempt = 0
            self.on_up()
            self.on_change()
            try:
                await self._serve(conn)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, EOFError) as exc:
                log.warning("redis link lost", extra={"link": self.name, "error": describe(exc)})
            except Exception:
                log.exception("redis link failed", extra={"link": self.name})
            finally:
                self.connected = False
                self._out.clear()
                await self._close_connection()
            self.reconnects += 1
            self.on_down()
            self.on_change()
            await asyncio.sleep(self._backoff.delay(0))

    async def _serve(self, conn: AbstractConnection) -> None:
        reader = asyncio.create_task(self._read_loop(conn))
        writer = asyncio.create_task(self._write_loop(conn))
        try:
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in (reader, writer):
                task.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)

    async def _write_loop(self, conn: AbstractConnection) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._out:
                continue
            batch, self._out = self._out, []
            await conn.send_packed_command(batch, check_health=False)

    async def _read_loop(self, conn: AbstractConnection) -> None:
        while True:
            try:
                reply = await conn.read_response(disconnect_on_error=False)
            except ResponseError as exc:
                self.handle_error_reply(exc)
                continue
            self.handle_reply(reply)

    async def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)


# Settles one command: (reply, None) on success, (None, error) when refused or the link died.
Settle = Callable[[Any, Exception | None], None]


class _Publisher(_Link):
    """Pipelines commands in order on one connection; replies settle the oldest in flight."""

    def __init__(
        self,
        pool: ConnectionPool,
        timeout: float,
        backoff: Backoff,
        script_set: tuple[scripts.Script, ...] = scripts.ALL,
        name: str = "publisher",
    ) -> None:
        super().__init__(name, pool, timeout, backoff)
        self._scripts = script_set
        # (monotonic send time, settle, command) per command awaiting its reply; the command is
        # kept so that a cluster shard that answers MOVED/ASK can have it sent elsewhere.
        self._inflight: deque[tuple[float, Settle | None, bytes]] = deque()
        self.on_up = self._load_scripts
        self.on_down = self._fail_inflight

    def command(self, data: bytes, settle: Settle | None) -> None:
        if not self.connected:
            if settle is not None:
                self.loop.call_soon(settle, None, BrokerUnavailable("redis is not connected"))
            return
        self.send(data)
        self._inflight.append((self.loop.time(), settle, data))

    async def request(self, data: bytes) -> Any:
        future: asyncio.Future[Any] = self.loop.create_future()

        def settle(reply: Any, error: Exception | None) -> None:
            if future.done():
                return
            if error is None:
                future.set_result(reply)
            else:
                future.set_exception(error)

        self.command(data, settle)
        return await within(self.loop, future, self._timeout, "redis did not answer in time")

    def ping(self) -> None:
        self.command(resp_command(b"PING"), None)

    def oldest_age(self, now: float) -> float:
        return now - self._inflight[0][0] if self._inflight else 0.0

    def handle_reply(self, reply: Any) -> None:
        if self._inflight:
            settle = self._inflight.popleft()[1]
            if settle is not None:
                settle(reply, None)

    def handle_error_reply(self, error: ResponseError) -> None:
        log.error("redis refused a command", extra={"error": str(error)})
        if self._inflight:
            settle = self._inflight.popleft()[1]
            if settle is not None:
                settle(None, BrokerUnavailable(f"redis refused: {error}"))
        if str(error).startswith("NOSCRIPT"):
            self._load_scripts()

    def _load_scripts(self) -> None:
        # Queued before anything else on a fresh connection: Redis runs commands in order, so
        # every EVALSHA after this finds its script, even right after a Redis restart.
        for script in self._scripts:
            self.command(resp_command(b"SCRIPT", b"LOAD", script.source.encode()), None)

    def _fail_inflight(self) -> None:
        failed, self._inflight = self._inflight, deque()
        error = BrokerUnavailable("redis connection lost")
        for _, settle, _ in failed:
            if settle is not None:
                settle(None, error)


def _published_or_failed(
    on_published: PublishedHandler, on_failure: FailureHandler | None
) -> Settle:
    def settle(reply: Any, error: Exception | None) -> None:
        if error is None:
            offset, epoch = reply  # the publish script answers {offset, epoch}
            on_published(epoch.decode(), int(offset))
        elif on_failure is not None:
            on_failure()

    return settle


def _failure_only(on_failure: FailureHandler | None) -> Settle | None:
    if on_failure is None:
        return None

    def settle(_reply: Any, error: Exception | None) -> None:
        if error is not None:
            on_failure()

    return settle


@dataclass(slots=True)
class _SubscribeRequest:
    """One SUBSCRIBE sent for a channel; Redis answers each with one ``subscribe`` reply."""

    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    abandoned: bool = False


class _Subscriber(_Link):
    # Classic pub/sub; the sharded subscriber of Redis Cluster changes these four.
    SUBSCRIBE: bytes = b"SUBSCRIBE"
    UNSUBSCRIBE: bytes = b"UNSUBSCRIBE"
    MESSAGE_KIND: bytes = b"message"
    SUBSCRIBE_KIND: bytes = b"subscribe"

    def __init__(
        self,
        pool: ConnectionPool,
        timeout: float,
        backoff: Backoff,
        on_message: MessageHandler,
        name: str = "subscriber",
    ) -> None:
        super().__init__(name, pool, timeout, backoff)
        self._on_message = on_message
        self.wanted: set[bytes] = set()
        self.confirmed: set[bytes] = set()
        self._requests: dict[bytes, deque[_SubscribeRequest]] = {}
        self.on_up = self._resubscribe
        self.on_down = self._reset
        # Told the room each time its channel becomes confirmed: first subscriptions and
        # resubscriptions alike.
        self.on_confirmed: Callable[[str], None] = lambda room: None
        self.last_pong = 0.0
        self._prefix_len = len(CHANNEL_PREFIX)

    async def subscribe(self, channel: bytes) -> None:
        if channel in self.confirmed:
            return
        if not self.connected:
            raise BrokerUnavailable("redis is not connected")
        self.wanted.add(channel)
        pending = self._requests.get(channel)
        request = pending[-1] if pending else None
        if request is None or request.abandoned:
            request = self._send_subscribe(channel)
        waiter: asyncio.Future[None] = self.loop.create_future()
        request.waiters.append(waiter)
        reason = "redis did not confirm the subscription in time"
        await within(self.loop, waiter, self._timeout, reason)

    def unsubscribe(self, channel: bytes) -> None:
        self.wanted.discard(channel)
        self.confirmed.discard(channel)
        for request in self._requests.get(channel, ()):
            # Its reply may still come; it must not confirm a room nobody wants any more, nor
            # wake a later join that needs a SUBSCRIBE sent after this UNSUBSCRIBE.
            request.abandoned = True
            _settle(request.waiters, BrokerUnavailable("left before the subscription completed"))
        if self.connected:
            self.send(resp_command(self.UNSUBSCRIBE, channel))

    def ping(self) -> None:
        if self.connected:
            self.send(resp_command(b"PING"))

    def _send_subscribe(self, channel: bytes) -> _SubscribeRequest:
        request = _SubscribeRequest()
        self._requests.setdefault(channel, deque()).append(request)
        self.send(resp_command(self.SUBSCRIBE, channel))
        return request

    def _resubscribe(self) -> None:
        self.last_pong = asyncio.get_running_loop().time()
        channels = list(self.wanted)
        for start in range(0, len(channels), _RESUBSCRIBE_BATCH):
            batch = channels[start : start + _RESUBSCRIBE_BATCH]
            for channel in batch:
                self._requests.setdefault(channel, deque()).append(_SubscribeRequest())
            self.send(resp_command(self.SUBSCRIBE, *batch))

    def _reset(self) -> None:
        self.confirmed.clear()
        requests, self._requests = self._requests, {}
        for pending in requests.values():
            for request in pending:
                _settle(request.waiters, BrokerUnavailable("redis connection lost"))

    def handle_reply(self, reply: Any) -> None:
        if not isinstance(reply, list):
            # A bare +PONG: the link has no subscriptions yet.
            self.last_pong = self.loop.time()
            return
        kind = reply[0]
        if kind == self.MESSAGE_KIND:
            self._on_message(self.room_of(reply[1]), reply[2])
        elif kind == self.SUBSCRIBE_KIND:
            self._confirm(reply[1])
        elif kind == b"pong":
            self.last_pong = self.loop.time()
        else:
            self.handle_other(kind, reply)

    def room_of(self, channel: bytes) -> str:
        return channel[self._prefix_len :].decode()

    def handle_other(self, kind: bytes, reply: list[Any]) -> None:
        """Replies the classic subscriber ignores (``unsubscribe`` confirmations)."""

    def handle_error_reply(self, error: ResponseError) -> None:
        log.error("redis refused a subscriber command", extra={"error": str(error)})

    def _confirm(self, channel: bytes) -> None:
        pending = self._requests.get(channel)
        if not pending:
            return
        request = pending.popleft()
        if not pending:
            del self._requests[channel]
        if not request.abandoned:
            was_confirmed = channel in self.confirmed
            self.confirmed.add(channel)
            if not was_confirmed:
                # Before the waiters run: a join must find the room's catch-up under way.
                self.on_confirmed(self.room_of(channel))
            _settle(request.waiters, None)


# redis-py names each sentinel it tried by the repr of a whole client (a kilobyte each).
_CLIENT_REPR: Final = re.compile(r"<redis\.[\w.]*Redis\((.*?)\)>\)>\)>")
_ADDRESS: Final = re.compile(r"host=([^,>]+),port=(\d+)")
_MAX_ERROR_TEXT: Final = 500


def _client_address(match: re.Match[str]) -> str:
    address = _ADDRESS.search(match[1])
    return f"{address[1]}:{address[2]}" if address else "a redis client"


def describe(exc: BaseException) -> str:
    """An exception for the log: its type always (a timeout's text is empty), then its text."""
    text = _CLIENT_REPR.sub(_client_address, str(exc))
    if len(text) > _MAX_ERROR_TEXT:
        text = text[:_MAX_ERROR_TEXT] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _settle(waiters: list[asyncio.Future[None]], error: Exception | None) -> None:
    for waiter in waiters:
        if not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)
    waiters.clear()


class RedisBroker(_OnOneLoop):
    """Standalone Redis (or the primary Sentinel names): one publisher and one subscriber link.

    Every Redis command goes through ``_command``/``_request`` with the key it touches, and every
    link is reached through ``_links``: the Redis Cluster broker overrides those to route by
    hash slot, and everything else (scripts, presence, heartbeat, reaper) is shared.
    """

    _scripts: scripts.ScriptSet = scripts.CLASSIC
    _publish_command: bytes = b"PUBLISH"

    def __init__(
        self,
        url: str,
        on_message: MessageHandler,
        on_state: StateHandler | None = None,
        *,
        timeout: float = 5.0,
        backoff: Backoff | None = None,
        limits: HistoryLimits | None = None,
        instance: str = "",
        presence_ttl: float = 15.0,
        on_resync: Callable[[], None] | None = None,
        pool: ConnectionPool | None = None,
    ) -> None:
        """``pool`` replaces the one built from ``url`` (Sentinel mode passes its own)."""
        self._init_common(
            on_message, on_state, timeout, backoff, limits, instance, presence_ttl, on_resync
        )
        self._pool = pool or ConnectionPool.from_url(url, **connection_options(timeout))
        self._publisher = self._new_publisher(self._pool, "publisher")
        self._subscriber = _Subscriber(self._pool, timeout, self._backoff, self.gaps.receive)
        self._subscriber.on_change = self._report_state
        self._subscriber.on_confirmed = self._subscribed_again

    def _init_common(
        self,
        on_message: MessageHandler,
        on_state: StateHandler | None,
        timeout: float,
        backoff: Backoff | None,
        limits: HistoryLimits | None,
        instance: str,
        presence_ttl: float,
        on_resync: Callable[[], None] | None,
    ) -> None:
        self._backoff = backoff or Backoff()
        self._limits = limits or HistoryLimits()
        self._instance = instance or new_epoch()
        self._rooms_key = f"rc:node:{self._instance}:rooms".encode()
        self._presence_ttl = presence_ttl
        self._on_resync = on_resync
        self._on_message = on_message
        self._timeout = timeout
        self._on_state = on_state
        self._publish_head = b"*3\r\n" + _bulk(self._publish_command)
        self._watchdog: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._was_ready = False
        # Rooms' chat streams pass through here: whatever a subscriber link missed (dropped and
        # re-made, slot moved, Redis restarted) is filled from history or announced as lost.
        self.gaps = LiveGaps(on_message, self._read_history, self._limits.size, 3 * timeout)

    def _new_publisher(self, pool: ConnectionPool, name: str) -> _Publisher:
        publisher = self._publisher_class()(
            pool, self._timeout, self._backoff, self._scripts.all, name
        )
        publisher.on_change = self._report_state
        load_scripts = publisher.on_up

        def on_publisher_up() -> None:
            load_scripts()
            # Listed among live nodes before any join of ours can reach Redis, so that even a
            # node killed before its first heartbeat leaves no unreapable members behind.
            self._command(
                NODES_KEY,
                resp_command(
                    b"ZADD", NODES_KEY, b"%d" % int(time.time() * 1000), self._instance.encode()
                ),
                None,
            )

        publisher.on_up = on_publisher_up
        return publisher

    def _publisher_class(self) -> type[_Publisher]:
        return _Publisher

    # Routing: one publisher for every key here; by hash slot in cluster mode.

    def _command(self, key: bytes, data: bytes, settle: Settle | None) -> None:
        self._publisher.command(data, settle)

    async def _request(self, key: bytes, data: bytes) -> Any:
        return await self._publisher.request(data)

    def _connected_for(self, key: bytes) -> bool:
        return self._publisher.connected

    def _channel(self, room: str) -> bytes:
        return channel_for(room)

    def _links(self) -> list[tuple[_Publisher, _Subscriber]]:
        return [(self._publisher, self._subscriber)]

    def _listening(self, room: str) -> bool:
        """False while members here wait for the room but Redis has not confirmed our
        subscription (the link is down or resubscribing): a message acknowledged now would
        reach them only through the gap filler, so it is refused instead."""
        channel = channel_for(room)
        subscriber = self._subscriber
        return channel not in subscriber.wanted or channel in subscriber.confirmed

    async def _barrier(self) -> None:
        """Return once every command queued so far was answered, on every link."""
        await asyncio.gather(
            *(publisher.request(resp_command(b"PING")) for publisher, _ in self._links())
        )

    def _report_state(self) -> None:
        ready = self.ready
        if ready != self._was_ready:
            self._was_ready = ready
            if self._on_state is not None:
                self._on_state(ready)

    @property
    def ready(self) -> bool:
        return self._publisher.connected and self._subscriber.connected

    @property
    def reconnects(self) -> int:
        return sum(p.reconnects + s.reconnects for p, s in self._links())

    async def start(self) -> None:
        self._publisher.start()
        self._subscriber.start()
        self._start_tasks()

    def _start_tasks(self) -> None:
        self._watchdog = asyncio.create_task(self._watch(), name="redis-watchdog")
        self._heartbeat = asyncio.create_task(self._beat(), name="redis-heartbeat")

    async def stop(self) -> None:
        for task in (self._watchdog, self._heartbeat):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._connected_for(NODES_KEY):
            # A clean stop is not a death: nothing for the others to reap.
            with contextlib.suppress(BrokerUnavailable):
                await self._request(
                    NODES_KEY, resp_command(b"ZREM", NODES_KEY, self._instance.encode())
                )
                await self._request(self._rooms_key, resp_command(b"DEL", self._rooms_key))
        await self._stop_links()

    async def _stop_links(self) -> None:
        await self.gaps.stop()
        await self._publisher.stop()
        await self._subscriber.stop()
        await self._pool.disconnect()

    async def subscribe(self, room: str) -> None:
        self.gaps.track(room)
        await self._subscriber.subscribe(channel_for(room))

    def unsubscribe(self, room: str) -> None:
        self.gaps.forget(room)
        self._subscriber.unsubscribe(channel_for(room))
        self._command(self._rooms_key, resp_command(b"SREM", self._rooms_key, room.encode()), None)

    def publish(self, room: str, payload: bytes, on_failure: FailureHandler | None = None) -> None:
        channel = self._channel(room)
        self._command(
            channel,
            self._publish_head + _bulk(channel) + _bulk(payload),
            _failure_only(on_failure),
        )

    def publish_message(
        self,
        room: str,
        head: bytes,
        prefix: bytes,
        on_failure: FailureHandler | None = None,
        on_published: PublishedHandler | None = None,
    ) -> None:
        if not self._listening(room):
            if on_failure is not None:
                self.loop.call_soon(on_failure)
            return
        seq = scripts.room_keys(room)[0]
        settle = (
            _failure_only(on_failure)
            if on_published is None
            else _published_or_failed(on_published, on_failure)
        )
        self._command(seq, self._publish_message_script(room, head, prefix), settle)

    async def post_message(self, room: str, head: bytes, prefix: bytes) -> tuple[str, int]:
        if not self._listening(room):
            raise BrokerUnavailable("this node is not subscribed to the room yet")
        seq = scripts.room_keys(room)[0]
        offset, epoch = await self._request(seq, self._publish_message_script(room, head, prefix))
        return epoch.decode(), int(offset)

    def _publish_message_script(self, room: str, head: bytes, prefix: bytes) -> bytes:
        seq, epoch, history, _ = scripts.room_keys(room)
        limits = self._limits
        return _evalsha(
            self._scripts.publish_message,
            (seq, epoch, history),
            (
                self._channel(room),
                head,
                prefix,
                b"%d" % limits.size,
                b"%d" % max(1, int(limits.ttl)),
                b"%d" % max(1, int(limits.meta_ttl)),
                new_epoch().encode(),
            ),
        )

    async def join(
        self, room: str, member: str, username: str, since: Since | None, announce: bytes
    ) -> JoinReply:
        seq, epoch, history, presence = scripts.room_keys(room)
        # The node's room list rides in the same write: one round trip for the whole join.
        self._command(self._rooms_key, resp_command(b"SADD", self._rooms_key, room.encode()), None)
        reply = await self._request(
            seq,
            _evalsha(
                self._scripts.join,
                (seq, epoch, history, presence),
                (
                    self._channel(room),
                    announce,
                    member.encode(),
                    username.encode(),
                    b"%d" % (since.offset if since else -1),
                    (since.epoch if since else "").encode(),
                    new_epoch().encode(),
                    b"%d" % max(1, int(self._limits.meta_ttl)),
                ),
            ),
        )
        epoch_value, latest, status, missed = reply
        self.gaps.baseline(room, epoch_value.decode(), int(latest))
        return JoinReply(epoch_value.decode(), int(latest), status.decode(), list(reversed(missed)))

    def leave(self, room: str, member: str, announce: bytes) -> None:
        presence = scripts.room_keys(room)[3]
        self._command(
            presence,
            _evalsha(
                self._scripts.leave, (presence,), (self._channel(room), announce, member.encode())
            ),
            None,
        )

    async def resync_presence(self, rooms: dict[str, dict[str, str]]) -> None:
        prefix = self._instance.encode() + b"-"
        listed = await self._request(self._rooms_key, resp_command(b"SMEMBERS", self._rooms_key))
        stale = {raw.decode() for raw in listed} - rooms.keys()
        for room in (*rooms, *stale):
            members = rooms.get(room, {})
            pairs = [part for m, u in members.items() for part in (m.encode(), u.encode())]
            presence = scripts.room_keys(room)[3]
            self._command(
                presence, _evalsha(self._scripts.resync, (presence,), (prefix, *pairs)), None
            )
            key_command = b"SADD" if members else b"SREM"
            self._command(
                self._rooms_key, resp_command(key_command, self._rooms_key, room.encode()), None
            )
        await self._barrier()  # all of the above is done

    async def history(self, room: str, limit: int) -> HistoryReply:
        seq, epoch, history, _ = scripts.room_keys(room)
        reply = await self._request(
            seq, _evalsha(self._scripts.history, (seq, epoch, history), (b"%d" % limit,))
        )
        epoch_value, latest, messages = reply
        return HistoryReply(epoch_value.decode(), int(latest), list(reversed(messages)))

    async def presence(self, room: str) -> dict[str, int]:
        presence = scripts.room_keys(room)[3]
        reply = await self._request(presence, resp_command(b"HVALS", presence))
        counts: dict[str, int] = {}
        for raw in reply:
            name = raw.decode()
            counts[name] = counts.get(name, 0) + 1
        return counts

    # Live gaps

    async def _read_history(self, room: str, limit: int) -> HistoryReply:
        return await self.history(room, limit)

    def _subscribed_again(self, room: str) -> None:
        # A room's first subscription has nothing to recheck yet (the gap filler knows no
        # offset of it); a later one (link re-made, slot moved) may have missed messages.
        self.gaps.recheck(room)

    async def _beat(self) -> None:
        """Tell the others this node lives; reap the members of nodes that stopped telling."""
        interval = self._presence_ttl / 3
        instance = self._instance.encode()
        while True:
            try:
                await asyncio.sleep(interval)
                if not self._connected_for(NODES_KEY):
                    continue
                now_ms = int(time.time() * 1000)
                added = await self._request(
                    NODES_KEY, resp_command(b"ZADD", NODES_KEY, b"%d" % now_ms, instance)
                )
                if added == 1 and self._on_resync is not None:
                    # Our entry was gone: Redis lost its data, or others reaped us during a stall.
                    self._on_resync()
                horizon = now_ms - int(self._presence_ttl * 1000)
                dead = await self._request(
                    NODES_KEY, resp_command(b"ZRANGEBYSCORE", NODES_KEY, b"-inf", b"%d" % horizon)
                )
                for other in dead:
                    if other != instance:
                        await self._reap(other)
            except asyncio.CancelledError:
                raise
            except (BrokerUnavailable, RedisError) as exc:
                log.warning("presence heartbeat failed", extra={"error": describe(exc)})
            except Exception:
                log.exception("presence heartbeat failed")

    async def _reap(self, dead: bytes) -> None:
        claim_key = b"rc:reap:" + dead
        claim = await self._request(
            claim_key,
            resp_command(b"SET", claim_key, self._instance.encode(), b"NX", b"EX", b"60"),
        )
        if claim is None:
            return  # another node is on it
        rooms_key = b"rc:node:" + dead + b":rooms"
        rooms = await self._request(rooms_key, resp_command(b"SMEMBERS", rooms_key))
        head = envelope.head(time.time())
        removed = 0
        for raw_room in rooms:
            room = raw_room.decode()
            presence = scripts.room_keys(room)[3]
            # One script per room: each touches a single slot, as Redis Cluster requires.
            removed += int(
                await self._request(
                    presence,
                    _evalsha(
                        self._scripts.reap,
                        (presence,),
                        (self._channel(room), head, dead + b"-", raw_room),
                    ),
                )
            )
        await self._request(rooms_key, resp_command(b"DEL", rooms_key))
        await self._request(NODES_KEY, resp_command(b"ZREM", NODES_KEY, dead))
        log.warning(
            "reaped a dead node's members", extra={"dead_node": dead.decode(), "members": removed}
        )

    async def _watch(self) -> None:
        """Detect a silent Redis (no RST, just no replies): ping every link, abort overdue ones."""
        loop = asyncio.get_running_loop()
        interval = self._timeout / 2
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for publisher, subscriber in self._links():
                if publisher.oldest_age(now) > self._timeout:
                    log.warning(
                        "redis publisher reply overdue; reconnecting",
                        extra={"link": publisher.name},
                    )
                    publisher.abort()
                else:
                    publisher.ping()
                if subscriber.connected:
                    if now - subscriber.last_pong > self._timeout + interval:
                        log.warning(
                            "redis subscriber ping overdue; reconnecting",
                            extra={"link": subscriber.name},
                        )
                        subscriber.abort()
                    else:
                        subscriber.ping()


def connection_options(timeout: float) -> dict[str, Any]:
    """redis-py connection settings for our own links (the cluster broker reuses them)."""
    return {
        "socket_connect_timeout": timeout,
        "socket_timeout": None,  # the subscriber waits for messages indefinitely
        "socket_keepalive": True,
        "retry": Retry(NoBackoff(), 0),  # reconnects are ours, with jitter
        "health_check_interval": 0,
        "protocol": 2,  # pub/sub replies as plain arrays, read in order by our loop
    }
