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
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from roomcast import envelope
from roomcast.broker import (
    BrokerUnavailable,
    FailureHandler,
    HistoryLimits,
    HistoryReply,
    MessageHandler,
    StateHandler,
    scripts,
)
from roomcast.broker.memory import new_epoch
from roomcast.recovery import JoinReply, Since

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


class _Link:
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
                    extra={"link": self.name, "error": str(exc), "retry_in_s": round(delay, 3)},
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
                log.warning("redis link lost", extra={"link": self.name, "error": str(exc)})
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

    def __init__(self, pool: ConnectionPool, timeout: float, backoff: Backoff) -> None:
        super().__init__("publisher", pool, timeout, backoff)
        # (monotonic send time, settle) per command awaiting its reply.
        self._inflight: deque[tuple[float, Settle | None]] = deque()
        self.on_up = self._load_scripts
        self.on_down = self._fail_inflight

    def command(self, data: bytes, settle: Settle | None) -> None:
        if not self.connected:
            if settle is not None:
                asyncio.get_running_loop().call_soon(
                    settle, None, BrokerUnavailable("redis is not connected")
                )
            return
        self.send(data)
        self._inflight.append((asyncio.get_running_loop().time(), settle))

    async def request(self, data: bytes) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def settle(reply: Any, error: Exception | None) -> None:
            if future.done():
                return
            if error is None:
                future.set_result(reply)
            else:
                future.set_exception(error)

        self.command(data, settle)
        try:
            return await asyncio.wait_for(future, self._timeout)
        except TimeoutError:
            raise BrokerUnavailable("redis did not answer in time") from None

    def ping(self) -> None:
        self.command(resp_command(b"PING"), None)

    def oldest_age(self, now: float) -> float:
        return now - self._inflight[0][0] if self._inflight else 0.0

    def handle_reply(self, reply: Any) -> None:
        if self._inflight:
            _, settle = self._inflight.popleft()
            if settle is not None:
                settle(reply, None)

    def handle_error_reply(self, error: ResponseError) -> None:
        log.error("redis refused a command", extra={"error": str(error)})
        if self._inflight:
            _, settle = self._inflight.popleft()
            if settle is not None:
                settle(None, BrokerUnavailable(f"redis refused: {error}"))
        if str(error).startswith("NOSCRIPT"):
            self._load_scripts()

    def _load_scripts(self) -> None:
        # Queued before anything else on a fresh connection: Redis runs commands in order, so
        # every EVALSHA after this finds its script, even right after a Redis restart.
        for script in scripts.ALL:
            self.command(resp_command(b"SCRIPT", b"LOAD", script.source.encode()), None)

    def _fail_inflight(self) -> None:
        failed, self._inflight = self._inflight, deque()
        error = BrokerUnavailable("redis connection lost")
        for _, settle in failed:
            if settle is not None:
                settle(None, error)


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
    def __init__(
        self,
        pool: ConnectionPool,
        timeout: float,
        backoff: Backoff,
        on_message: MessageHandler,
    ) -> None:
        super().__init__("subscriber", pool, timeout, backoff)
        self._on_message = on_message
        self.wanted: set[bytes] = set()
        self.confirmed: set[bytes] = set()
        self._requests: dict[bytes, deque[_SubscribeRequest]] = {}
        self.on_up = self._resubscribe
        self.on_down = self._reset
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
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        request.waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, self._timeout)
        except TimeoutError:
            raise BrokerUnavailable("redis did not confirm the subscription in time") from None

    def unsubscribe(self, channel: bytes) -> None:
        self.wanted.discard(channel)
        self.confirmed.discard(channel)
        for request in self._requests.get(channel, ()):
            # Its reply may still come; it must not confirm a room nobody wants any more, nor
            # wake a later join that needs a SUBSCRIBE sent after this UNSUBSCRIBE.
            request.abandoned = True
            _settle(request.waiters, BrokerUnavailable("left before the subscription completed"))
        if self.connected:
            self.send(resp_command(b"UNSUBSCRIBE", channel))

    def ping(self) -> None:
        if self.connected:
            self.send(resp_command(b"PING"))

    def _send_subscribe(self, channel: bytes) -> _SubscribeRequest:
        request = _SubscribeRequest()
        self._requests.setdefault(channel, deque()).append(request)
        self.send(resp_command(b"SUBSCRIBE", channel))
        return request

    def _resubscribe(self) -> None:
        self.last_pong = asyncio.get_running_loop().time()
        channels = list(self.wanted)
        for start in range(0, len(channels), _RESUBSCRIBE_BATCH):
            batch = channels[start : start + _RESUBSCRIBE_BATCH]
            for channel in batch:
                self._requests.setdefault(channel, deque()).append(_SubscribeRequest())
            self.send(resp_command(b"SUBSCRIBE", *batch))

    def _reset(self) -> None:
        self.confirmed.clear()
        requests, self._requests = self._requests, {}
        for pending in requests.values():
            for request in pending:
                _settle(request.waiters, BrokerUnavailable("redis connection lost"))

    def handle_reply(self, reply: Any) -> None:
        if not isinstance(reply, list):
            # A bare +PONG: the link has no subscriptions yet.
            self.last_pong = asyncio.get_running_loop().time()
            return
        kind = reply[0]
        if kind == b"message":
            channel = reply[1]
            self._on_message(channel[self._prefix_len :].decode(), reply[2])
        elif kind == b"subscribe":
            self._confirm(reply[1])
        elif kind == b"pong":
            self.last_pong = asyncio.get_running_loop().time()

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
            self.confirmed.add(channel)
            _settle(request.waiters, None)


def _settle(waiters: list[asyncio.Future[None]], error: Exception | None) -> None:
    for waiter in waiters:
        if not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)
    waiters.clear()


class RedisBroker:
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
    ) -> None:
        backoff = backoff or Backoff()
        self._limits = limits or HistoryLimits()
        self._instance = instance or new_epoch()
        self._rooms_key = f"rc:node:{self._instance}:rooms".encode()
        self._presence_ttl = presence_ttl
        self._on_resync = on_resync
        self._pool = ConnectionPool.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=None,  # the subscriber waits for messages indefinitely
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),  # reconnects are ours, with jitter
            health_check_interval=0,
            protocol=2,  # pub/sub replies as plain arrays, read in order by our loop
        )
        self._timeout = timeout
        self._on_state = on_state
        self._publisher = _Publisher(self._pool, timeout, backoff)
        self._subscriber = _Subscriber(self._pool, timeout, backoff, on_message)
        self._publisher.on_change = self._subscriber.on_change = self._report_state
        load_scripts = self._publisher.on_up

        def on_publisher_up() -> None:
            load_scripts()
            # Listed among live nodes before any join of ours can reach Redis, so that even a
            # node killed before its first heartbeat leaves no unreapable members behind.
            self._publisher.command(
                resp_command(
                    b"ZADD", NODES_KEY, b"%d" % int(time.time() * 1000), self._instance.encode()
                ),
                None,
            )

        self._publisher.on_up = on_publisher_up
        self._watchdog: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._was_ready = False

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
        return self._publisher.reconnects + self._subscriber.reconnects

    async def start(self) -> None:
        self._publisher.start()
        self._subscriber.start()
        self._watchdog = asyncio.create_task(self._watch(), name="redis-watchdog")
        self._heartbeat = asyncio.create_task(self._beat(), name="redis-heartbeat")

    async def stop(self) -> None:
        for task in (self._watchdog, self._heartbeat):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._publisher.connected:
            # A clean stop is not a death: nothing for the others to reap.
            with contextlib.suppress(BrokerUnavailable):
                await self._publisher.request(
                    resp_command(b"ZREM", NODES_KEY, self._instance.encode())
                )
                await self._publisher.request(resp_command(b"DEL", self._rooms_key))
        await self._publisher.stop()
        await self._subscriber.stop()
        await self._pool.disconnect()

    async def subscribe(self, room: str) -> None:
        await self._subscriber.subscribe(channel_for(room))

    def unsubscribe(self, room: str) -> None:
        self._subscriber.unsubscribe(channel_for(room))
        self._publisher.command(resp_command(b"SREM", self._rooms_key, room.encode()), None)

    def publish(self, room: str, payload: bytes, on_failure: FailureHandler | None = None) -> None:
        self._publisher.command(
            b"*3\r\n$7\r\nPUBLISH\r\n" + _bulk(channel_for(room)) + _bulk(payload),
            _failure_only(on_failure),
        )

    def publish_message(
        self, room: str, head: bytes, prefix: bytes, on_failure: FailureHandler | None = None
    ) -> None:
        seq, epoch, history, _ = scripts.room_keys(room)
        limits = self._limits
        self._publisher.command(
            _evalsha(
                scripts.PUBLISH_MESSAGE,
                (seq, epoch, history),
                (
                    channel_for(room),
                    head,
                    prefix,
                    b"%d" % limits.size,
                    b"%d" % max(1, int(limits.ttl)),
                    b"%d" % max(1, int(limits.meta_ttl)),
                    new_epoch().encode(),
                ),
            ),
            _failure_only(on_failure),
        )

    async def join(
        self, room: str, member: str, username: str, since: Since | None, announce: bytes
    ) -> JoinReply:
        seq, epoch, history, presence = scripts.room_keys(room)
        # The node's room list rides in the same write: one round trip for the whole join.
        self._publisher.command(resp_command(b"SADD", self._rooms_key, room.encode()), None)
        reply = await self._publisher.request(
            _evalsha(
                scripts.JOIN,
                (seq, epoch, history, presence),
                (
                    channel_for(room),
                    announce,
                    member.encode(),
                    username.encode(),
                    b"%d" % (since.offset if since else -1),
                    (since.epoch if since else "").encode(),
                    new_epoch().encode(),
                    b"%d" % max(1, int(self._limits.meta_ttl)),
                ),
            )
        )
        epoch_value, latest, status, missed = reply
        return JoinReply(epoch_value.decode(), int(latest), status.decode(), list(reversed(missed)))

    def leave(self, room: str, member: str, announce: bytes) -> None:
        presence = scripts.room_keys(room)[3]
        self._publisher.command(
            _evalsha(scripts.LEAVE, (presence,), (channel_for(room), announce, member.encode())),
            None,
        )

    async def resync_presence(self, rooms: dict[str, dict[str, str]]) -> None:
        prefix = self._instance.encode() + b"-"
        listed = await self._publisher.request(resp_command(b"SMEMBERS", self._rooms_key))
        stale = {raw.decode() for raw in listed} - rooms.keys()
        for room in (*rooms, *stale):
            members = rooms.get(room, {})
            pairs = [part for m, u in members.items() for part in (m.encode(), u.encode())]
            presence = scripts.room_keys(room)[3]
            self._publisher.command(_evalsha(scripts.RESYNC, (presence,), (prefix, *pairs)), None)
            key_command = b"SADD" if members else b"SREM"
            self._publisher.command(resp_command(key_command, self._rooms_key, room.encode()), None)
        await self._publisher.request(resp_command(b"PING"))  # all of the above is done

    async def history(self, room: str, limit: int) -> HistoryReply:
        seq, epoch, history, _ = scripts.room_keys(room)
        reply = await self._publisher.request(
            _evalsha(scripts.HISTORY, (seq, epoch, history), (b"%d" % limit,))
        )
        epoch_value, latest, messages = reply
        return HistoryReply(epoch_value.decode(), int(latest), list(reversed(messages)))

    async def presence(self, room: str) -> dict[str, int]:
        presence = scripts.room_keys(room)[3]
        reply = await self._publisher.request(resp_command(b"HVALS", presence))
        counts: dict[str, int] = {}
        for raw in reply:
            name = raw.decode()
            counts[name] = counts.get(name, 0) + 1
        return counts

    async def _beat(self) -> None:
        """Tell the others this node lives; reap the members of nodes that stopped telling."""
        interval = self._presence_ttl / 3
        instance = self._instance.encode()
        while True:
            try:
                await asyncio.sleep(interval)
                if not self._publisher.connected:
                    continue
                now_ms = int(time.time() * 1000)
                added = await self._publisher.request(
                    resp_command(b"ZADD", NODES_KEY, b"%d" % now_ms, instance)
                )
                if added == 1 and self._on_resync is not None:
                    # Our entry was gone: Redis lost its data, or others reaped us during a stall.
                    self._on_resync()
                horizon = now_ms - int(self._presence_ttl * 1000)
                dead = await self._publisher.request(
                    resp_command(b"ZRANGEBYSCORE", NODES_KEY, b"-inf", b"%d" % horizon)
                )
                for other in dead:
                    if other != instance:
                        await self._reap(other)
            except asyncio.CancelledError:
                raise
            except (BrokerUnavailable, RedisError) as exc:
                log.warning("presence heartbeat failed", extra={"error": str(exc)})
            except Exception:
                log.exception("presence heartbeat failed")

    async def _reap(self, dead: bytes) -> None:
        claim = await self._publisher.request(
            resp_command(b"SET", b"rc:reap:" + dead, self._instance.encode(), b"NX", b"EX", b"60")
        )
        if claim is None:
            return  # another node is on it
        rooms_key = b"rc:node:" + dead + b":rooms"
        rooms = await self._publisher.request(resp_command(b"SMEMBERS", rooms_key))
        head = envelope.head(time.time())
        removed = 0
        for raw_room in rooms:
            room = raw_room.decode()
            presence = scripts.room_keys(room)[3]
            removed += int(
                await self._publisher.request(
                    _evalsha(
                        scripts.REAP, (presence,), (channel_for(room), head, dead + b"-", raw_room)
                    )
                )
            )
        await self._publisher.request(resp_command(b"DEL", rooms_key))
        await self._publisher.request(resp_command(b"ZREM", NODES_KEY, dead))
        log.warning(
            "reaped a dead node's members", extra={"dead_node": dead.decode(), "members": removed}
        )

    async def _watch(self) -> None:
        """Detect a silent Redis (no RST, just no replies): ping both links, abort overdue ones."""
        loop = asyncio.get_running_loop()
        interval = self._timeout / 2
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            if self._publisher.oldest_age(now) > self._timeout:
                log.warning("redis publisher reply overdue; reconnecting")
                self._publisher.abort()
            else:
                self._publisher.ping()
            if self._subscriber.connected:
                if now - self._subscriber.last_pong > self._timeout + interval:
                    log.warning("redis subscriber ping overdue; reconnecting")
                    self._subscriber.abort()
                else:
                    self._subscriber.ping()
