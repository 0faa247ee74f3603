"""Reconnecting Redis links: each is one connection with its own reconnect loop, write queue
and read loop, proven alive by the watchdog (:func:`roomcast.broker.shard.watch`).

- :class:`CommandLink` pipelines commands in order on one connection; each reply settles the
  oldest command in flight. A burst costs one write, not one round trip each.
- :class:`SubscriberLink` holds pub/sub subscriptions: ``subscribe`` returns only once Redis
  confirmed it, and every reconnect makes them all again.

Links reconnect with exponential backoff and full jitter. What a command is (a publication) is
said by its caller in a :class:`Command`, never read back from its bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import (
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.retry import Retry

from roomcast.broker import BrokerUnavailable, MessageHandler, NotRun, resp, within
from roomcast.broker.cluster_slots import redirect_of, slot_of
from roomcast.broker.deadline import RedisClock, now_ms
from roomcast.broker.errors import describe, refusal_kind
from roomcast.broker.scripts import Script
from roomcast.runtime.log_sampling import LogSampler, log_sampled

log = logging.getLogger("roomcast.broker.redis")

# Error replies that refuse a command before it ran, or a script at a write Redis does not
# take now (its first, for the join script): nothing of it happened (broker.NotRun).
_REFUSED_AT_ONCE = (NoScriptError, OutOfMemoryError, ReadOnlyError)

try:
    # What redis-py's hiredis parser returns while a reply is incomplete (see hiredis_reader).
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _NOT_ENOUGH_DATA
except ImportError:  # pragma: no cover - another redis-py layout: its public read path is used
    _NOT_ENOUGH_DATA = None

# Settles one command: (reply, None) on success, (None, error) when refused or the link died.
Settle = Callable[[Any, Exception | None], None]


class TryAgain(BrokerUnavailable):
    """Refused before it ran (a Redis Cluster slot half migrated): it can be sent again."""


class LinkLost(BrokerUnavailable):
    """The connection died with the command in flight: Redis may have run it, or may still run
    it if the bytes wait in a stalled server's buffer. Its outcome is unknown, not a refusal."""


def _nothing() -> None:
    pass


def connection_options(timeout: float) -> dict[str, Any]:
    """redis-py connection settings for our own links (every Redis mode uses them)."""
    return {
        "socket_connect_timeout": timeout,
        "socket_timeout": None,  # the subscriber waits for messages indefinitely
        "socket_keepalive": True,
        "retry": Retry(NoBackoff(), 0),  # reconnects are ours, with jitter
        "health_check_interval": 0,
        "protocol": 2,  # pub/sub replies as plain arrays, read in order by our loop
    }


@dataclass(frozen=True, slots=True)
class ReconnectDelay:
    """How long a link waits before connecting again, after ``attempt`` failed attempts."""

    initial: float = 0.05
    maximum: float = 5.0

    def delay(self, attempt: int) -> float:
        # Full jitter: nodes restarted together do not all hit Redis at the same instant.
        return random.uniform(self.initial, min(self.maximum, self.initial * 2**attempt))


class OnOneLoop:
    """Keeps the running loop, not looked up per command: on Python 3.11 every
    asyncio.get_running_loop() is a getpid() system call (5.6 of them per connection setup)."""

    _loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop


class Command:
    """One command for a :class:`CommandLink`: its RESP bytes and what its caller knows of it.

    ``publishes``: it publishes on the room's channel (a Redis Cluster broker must then hand over
    what a slot's importing node published, where this node does not listen yet). The cluster
    broker records on it what happened on the way: ``redirects`` (MOVED/ASK hops), ``asked``
    (served by an importing node after ASK) and ``then`` (runs on success, before ``reply_to``).
    """

    # One is made per publication: only what every command has is set per instance (no
    # __slots__, so that the rest can default here; this halves the cost of making one).
    sent_at: float = 0.0
    redirects: int = 0
    asked: bool = False
    then: Callable[[], None] | None = None

    def __init__(
        self, data: bytes, reply_to: Settle | None = None, *, publishes: bool = False
    ) -> None:
        self.data = data
        self.reply_to = reply_to
        self.publishes = publishes

    def settle(self, reply: Any, error: Exception | None) -> None:
        if error is None and self.then is not None:
            self.then()
        if self.reply_to is not None:
            self.reply_to(reply, error)

    def fail_soon(self, loop: asyncio.AbstractEventLoop, error: Exception) -> None:
        """Refused before it was sent: tell the caller on the next loop turn, never inline."""
        if self.reply_to is not None:
            loop.call_soon(self.settle, None, error)


def resolving(future: asyncio.Future[Any]) -> Settle:
    """A settle callback that completes ``future`` (the first outcome wins)."""

    def settle(reply: Any, error: Exception | None) -> None:
        if future.done():
            return
        if error is None:
            future.set_result(reply)
        else:
            future.set_exception(error)

    return settle


async def _server_of(conn: AbstractConnection, link: str) -> str:
    """The ``run_id`` of the server a fresh connection reached ("" if it refuses ``INFO``)."""
    await conn.send_command("INFO", "server", check_health=False)
    try:
        info = await conn.read_response()
    except ResponseError as exc:
        # An ACL user without INFO (+@all -info) or INFO renamed away: the node works, but
        # cannot see its links reach two servers through one address (RedisShard): say so.
        log.warning(
            "redis refused INFO: links on two servers go unnoticed",
            extra={"link": link, "error": describe(exc)},
        )
        return ""
    text = info.decode() if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        if line.startswith("run_id:"):
            return line[len("run_id:") :].strip()
    return ""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a link connects (a redis-py pool: address, credentials, TLS), how long it waits for
    a connection or a reply, and how long between attempts."""

    pool: ConnectionPool
    timeout: float
    reconnect: ReconnectDelay = ReconnectDelay()


class RedisLink(OnOneLoop):
    """One Redis connection with its own reconnect loop, write queue and read loop.

    ``on_up``/``on_down``, set by whoever composes the link, run after the link's own
    bookkeeping each time it connects and each time it loses its connection.
    """

    def __init__(self, name: str, endpoint: Endpoint) -> None:
        self.name = name
        self._pool = endpoint.pool
        self._timeout = endpoint.timeout
        self._reconnect = endpoint.reconnect
        self._conn: AbstractConnection | None = None
        self._out: list[bytes] = []
        # The write loop's wait for something to write: a bare future rather than an
        # asyncio.Event, whose wait() looks the running loop up (a getpid() system call on
        # Python 3.11) and whose set() walks its waiters, for every command sent.
        self._writable: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._aborted: asyncio.Future[None] | None = None  # set while a connection is served
        self.connected = False
        # The server's ``run_id`` (INFO server) on this connection, "" if Redis would not say:
        # two links through one address may reach two servers (see RedisShard).
        self.server = ""
        self.on_up: Callable[[], None] = _nothing
        self.on_down: Callable[[], None] = _nothing
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
        writable = self._writable
        if writable is not None:
            self._writable = None
            if not writable.done():
                writable.set_result(None)

    def abort(self) -> None:
        """Drop the connection (e.g. a reply is overdue); the supervisor reconnects.

        It ends the link's own read and write loops, then closes the connection with redis-py's
        public ``disconnect()`` (its streams are private), rather than resetting the socket."""
        if self._aborted is not None and not self._aborted.done():
            self._aborted.set_result(None)

    def watch(self, now: float) -> None:
        """Called by the watchdog every half timeout: keep the link proven alive, or abort it."""
        raise NotImplementedError

    def _up(self) -> None:
        """The link's own bookkeeping on a fresh connection."""
        raise NotImplementedError

    def _down(self) -> None:
        """The link's own bookkeeping once its connection is gone."""
        raise NotImplementedError

    def _reply(self, reply: Any) -> None:
        raise NotImplementedError

    def _refused(self, error: ResponseError) -> None:
        raise NotImplementedError

    async def _supervise(self) -> None:
        attempt = 0
        while True:
            conn = self._pool.make_connection()  # type: ignore[no-untyped-call]
            try:
                await asyncio.wait_for(conn.connect(), self._timeout)
                server = await asyncio.wait_for(_server_of(conn, self.name), self._timeout)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as exc:
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)  # connected, but no INFO reply in time
                delay = self._reconnect.delay(attempt)
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
            self.server = server
            self.connected = True
            if attempt or self.reconnects:
                log.info("redis connected", extra={"link": self.name, "attempts": attempt + 1})
            attempt = 0
            self._up()
            self.on_up()
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
            self._down()
            self.on_down()
            await asyncio.sleep(self._reconnect.delay(0))

    async def _serve(self, conn: AbstractConnection) -> None:
        aborted = self._aborted = self.loop.create_future()
        reader = asyncio.create_task(self._read_loop(conn))
        writer = asyncio.create_task(self._write_loop(conn))
        try:
            done, _ = await asyncio.wait(
                {reader, writer, aborted}, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done - {aborted}:
                task.result()
            raise ConnectionAbortedError("dropped: no answer in time")
        finally:
            self._aborted = None
            for task in (reader, writer):
                task.cancel()
            # Cancelled, the read and write loops let go of the connection; the supervisor
            # then closes it through redis-py's public disconnect().
            await asyncio.gather(reader, writer, return_exceptions=True)

    async def _write_loop(self, conn: AbstractConnection) -> None:
        while True:
            if not self._out:
                writable = self._writable = self.loop.create_future()
                try:
                    await writable
                finally:
                    self._writable = None
                continue
            batch, self._out = self._out, []
            await conn.send_packed_command(batch, check_health=False)

    async def _read_loop(self, conn: AbstractConnection) -> None:
        direct = hiredis_reader(conn)
        if direct is not None:
            await self._read_replies(*direct)
            return
        while True:
            try:
                reply = await conn.read_response(disconnect_on_error=False)
            except ResponseError as exc:
                self._refused(exc)
                continue
            self._reply(reply)

    async def _read_replies(self, reader: hiredis.Reader, stream: asyncio.StreamReader) -> None:
        """The read loop straight from the connection's hiredis parser: every reply already
        parsed is handled in the same loop turn, and a loop turn waits only for more bytes.
        redis-py's read_response, per reply, is five coroutines deep and formats the server's
        address for its error messages: 4-5 % of a join's instructions on the node (callgrind,
        setup_instructions.py --redis)."""
        while True:
            reply = reader.gets()
            if reply is _NOT_ENOUGH_DATA:
                data = await stream.read(65536)
                if not data:
                    raise RedisConnectionError("Connection closed by server.")
                reader.feed(data)
                continue
            # What redis-py's read_response does with each reply, in its order: a connection
            # error (e.g. LOADING) ends the link, a refusal settles its command.
            if isinstance(reply, RedisConnectionError):
                raise reply
            if isinstance(reply, list) and reply and isinstance(reply[0], RedisConnectionError):
                raise reply[0]
            if isinstance(reply, ResponseError):
                self._refused(reply)
                continue
            self._reply(reply)

    async def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)


def hiredis_reader(conn: AbstractConnection) -> tuple[hiredis.Reader, asyncio.StreamReader] | None:
    """The hiredis parser and stream of a connected redis-py connection, read directly by the
    links; None when redis-py's internals are not what this version of it has (the links then
    read through its public read_response, as before)."""
    parser = getattr(conn, "_parser", None)
    reader = getattr(parser, "_reader", None)
    stream = getattr(parser, "_stream", None)
    if (
        _NOT_ENOUGH_DATA is not None
        and isinstance(reader, hiredis.Reader)
        and isinstance(stream, asyncio.StreamReader)
    ):
        return reader, stream
    return None


# An error reply and the command it answers (None if none was in flight); True when the
# callee took care of the command (a cluster redirection), False to have it fail as refused.
Refusal = Callable[[ResponseError, Command | None], bool]


class CommandLink(RedisLink):
    """Pipelines commands in order on one connection; replies settle the oldest in flight.

    On every fresh connection the scripts are loaded before anything else is sent: Redis runs
    commands in order, so every EVALSHA after that finds its script, even after a restart.
    """

    def __init__(
        self,
        name: str,
        endpoint: Endpoint,
        script_set: tuple[Script, ...],
        on_refused: Refusal | None = None,
        clock: RedisClock | None = None,
    ) -> None:
        super().__init__(name, endpoint)
        self._scripts = script_set
        self._on_refused = on_refused
        self._inflight: deque[Command] = deque()
        self._reloading = 0  # SCRIPT LOADs not answered yet
        # Told when Redis answers READONLY: the server is a replica now (see RedisShard).
        self.on_demoted: Callable[[], None] = _nothing
        # Redis's clock, sampled by a TIME on every connect and every watchdog round.
        self.clock = clock or RedisClock()
        self.refusals: Counter[str] = Counter()  # error replies, by refusal_kind
        self._refusals_logged = LogSampler()

    def command(self, command: Command) -> None:
        if not self.connected:
            command.fail_soon(self.loop, BrokerUnavailable("redis is not connected"))
            return
        self.send(command.data)
        command.sent_at = self.loop.time()
        self._inflight.append(command)

    async def request(self, data: bytes) -> Any:
        future: asyncio.Future[Any] = self.loop.create_future()
        self.command(Command(data, resolving(future)))
        return await within(self.loop, future, self._timeout, "redis did not answer in time")

    def ping(self) -> None:
        self.command(Command(resp.PING))

    def sample_clock(self) -> None:
        """A TIME where a PING would do: proves the link alive and samples Redis's clock."""
        sent_ms = now_ms()
        clock = self.clock

        def record(reply: Any, error: Exception | None) -> None:
            if error is None:
                clock.sample(sent_ms, now_ms(), reply)

        self.command(Command(resp.TIME, record))

    def oldest_age(self, now: float) -> float:
        return now - self._inflight[0].sent_at if self._inflight else 0.0

    def watch(self, now: float) -> None:
        if self.oldest_age(now) > self._timeout:
            log.warning("redis publisher reply overdue; reconnecting", extra={"link": self.name})
            self.abort()
        else:
            self.sample_clock()

    def _reply(self, reply: Any) -> None:
        if self._inflight:
            self._inflight.popleft().settle(reply, None)

    def _refused(self, error: ResponseError) -> None:
        command = self._inflight.popleft() if self._inflight else None
        if self._on_refused is not None and self._on_refused(error, command):
            return
        kind = refusal_kind(error)
        self.refusals[kind] += 1
        # A Redis that refuses every command (a user stripped of a right, MISCONF) refuses
        # each chat message: a line each was 160 lines a second for 200 messages. Counted
        # each, logged a few then about one a second per kind, with how many went unlogged.
        log_sampled(
            self._refusals_logged,
            kind,
            log,
            logging.ERROR,
            "redis refused a command",
            {"error": str(error)},
        )
        if command is not None:
            refused = NotRun if isinstance(error, _REFUSED_AT_ONCE) else BrokerUnavailable
            command.settle(None, refused(f"redis refused: {error}"))
        # redis-py's parser turns these replies into classes and strips the code from their
        # text: matching "NOSCRIPT" on the text never fired, and a SCRIPT FLUSH left the node
        # refusing every message for good.
        if isinstance(error, NoScriptError):
            if self._reloading <= 0:
                self._load_scripts()
        elif isinstance(error, ReadOnlyError):
            # Still on a primary that was demoted (a failover whose CLIENT KILL we missed, or a
            # managed Redis whose address now leads to the promoted replica): reconnect, which
            # asks Sentinel where the primary is now, or resolves the address again.
            self.abort()
            self.on_demoted()

    def _up(self) -> None:
        self._load_scripts()
        self.sample_clock()

    def _load_scripts(self) -> None:
        # Every EVALSHA already in flight behind a refused one is refused too: one reload
        # answers them all, until its last SCRIPT LOAD is answered.
        self._reloading = len(self._scripts)

        def loaded(_reply: Any, _error: Exception | None) -> None:
            self._reloading = max(0, self._reloading - 1)

        for script in self._scripts:
            load = resp.command(b"SCRIPT", b"LOAD", script.source.encode())
            self.command(Command(load, loaded))

    def _down(self) -> None:
        failed, self._inflight = self._inflight, deque()
        error = LinkLost("redis connection lost with the command in flight")
        for command in failed:
            command.settle(None, error)


@dataclass(frozen=True, slots=True)
class PubSub:
    """One flavour of pub/sub: its commands, the kinds of its replies, and channel naming."""

    subscribe: bytes
    unsubscribe: bytes
    message: bytes  # the kind of a publication's reply
    subscribed: bytes  # the kind of a subscription's confirmation
    unsubscribed: bytes
    batch: int  # channels per command when resubscribing (1 where several could be CROSSSLOT)
    room_of: Callable[[bytes], str]


class SlotMoved(BrokerUnavailable):
    """A subscription was refused or dropped because its hash slot moved: retry elsewhere."""


@dataclass(slots=True)
class _SubscribeRequest:
    """One SUBSCRIBE sent for a channel; Redis answers each with one confirmation."""

    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    abandoned: bool = False


class SubscriberLink(RedisLink):
    """Subscriptions confirmed by Redis, made again on every reconnect.

    ``on_slot_moved`` (Redis Cluster only) is told when Redis drops a subscription unprompted or
    refuses one with MOVED: the slot's owner changed, the topology must be read again.
    """

    def __init__(
        self,
        name: str,
        endpoint: Endpoint,
        pubsub: PubSub,
        on_message: MessageHandler,
        on_confirmed: Callable[[str], None],
        on_slot_moved: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name, endpoint)
        self._pubsub = pubsub
        # Read per publication: kept as plain attributes.
        self._message_kind = pubsub.message
        self._room_of = pubsub.room_of
        self._on_message = on_message
        # Told the room each time its channel becomes confirmed: first subscriptions and
        # resubscriptions alike.
        self._on_confirmed = on_confirmed
        self._on_slot_moved = on_slot_moved
        self.wanted: set[bytes] = set()
        self.confirmed: set[bytes] = set()
        self._requests: dict[bytes, deque[_SubscribeRequest]] = {}
        # Our own UNSUBSCRIBEs not yet confirmed: any other unsubscribe is Redis dropping us.
        self._own_unsubscribes: Counter[bytes] = Counter()
        self.last_pong = 0.0

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
        # The requests' replies may still come; they must not confirm a room nobody wants any
        # more, nor wake a later join that needs a SUBSCRIBE sent after this UNSUBSCRIBE.
        left = BrokerUnavailable("left before the subscription completed")
        self._abandon(channel, self._requests.get(channel, ()), left)
        if self.connected:
            if self._on_slot_moved is not None:
                self._own_unsubscribes[channel] += 1
            self.send(resp.command(self._pubsub.unsubscribe, channel))

    def adopt(self, channel: bytes) -> None:
        """Serve ``channel`` from now on (its slot moved here); no one awaits the confirmation."""
        self.wanted.add(channel)
        if self.connected and channel not in self.confirmed and channel not in self._requests:
            self._send_subscribe(channel)

    def drop(self, channel: bytes) -> None:
        """Forget ``channel`` without telling Redis: its slot is no longer this server's."""
        moved = SlotMoved("the room's slot moved to another shard")
        self._abandon(channel, self._requests.pop(channel, ()), moved)

    def _abandon(
        self, channel: bytes, requests: Iterable[_SubscribeRequest], error: Exception
    ) -> None:
        self.wanted.discard(channel)
        self.confirmed.discard(channel)
        for request in requests:
            request.abandoned = True
            _settle(request.waiters, error)

    def ping(self) -> None:
        if self.connected:
            self.send(resp.PING)

    def watch(self, now: float) -> None:
        if not self.connected:
            return
        if now - self.last_pong > self._timeout * 1.5:  # a ping every half timeout, plus one
            log.warning("redis subscriber ping overdue; reconnecting", extra={"link": self.name})
            self.abort()
        else:
            self.ping()

    def _send_subscribe(self, channel: bytes) -> _SubscribeRequest:
        request = _SubscribeRequest()
        self._requests.setdefault(channel, deque()).append(request)
        self.send(resp.command(self._pubsub.subscribe, channel))
        return request

    def _up(self) -> None:
        self._own_unsubscribes.clear()
        self.last_pong = self.loop.time()
        channels = list(self.wanted)
        size = self._pubsub.batch
        for start in range(0, len(channels), size):
            batch = channels[start : start + size]
            for channel in batch:
                self._requests.setdefault(channel, deque()).append(_SubscribeRequest())
            self.send(resp.command(self._pubsub.subscribe, *batch))

    def _down(self) -> None:
        self.confirmed.clear()
        requests, self._requests = self._requests, {}
        for pending in requests.values():
            for request in pending:
                _settle(request.waiters, BrokerUnavailable("redis connection lost"))

    def _reply(self, reply: Any) -> None:
        if not isinstance(reply, list):
            # A bare +PONG: the link has no subscriptions yet.
            self.last_pong = self.loop.time()
            return
        kind = reply[0]
        if kind == self._message_kind:
            self._on_message(self._room_of(reply[1]), reply[2])
        elif kind == self._pubsub.subscribed:
            self._confirm(reply[1])
        elif kind == b"pong":
            self.last_pong = self.loop.time()
        elif kind == self._pubsub.unsubscribed and self._on_slot_moved is not None:
            self._unsubscribed(reply)

    def _unsubscribed(self, reply: list[Any]) -> None:
        if len(reply) < 2 or reply[1] is None:
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
        if self._on_slot_moved is not None:
            self._on_slot_moved()

    def _refused(self, error: ResponseError) -> None:
        redirect = redirect_of(error) if self._on_slot_moved is not None else None
        if redirect is None or self._on_slot_moved is None:
            log.error("redis refused a subscriber command", extra={"error": str(error)})
            if self._requests:
                # A refused SUBSCRIBE (BUSY while another client's script runs) is neither
                # confirmed nor sent again: its room stayed unheard on this node, every message
                # to it refused, long after Redis took commands again. Connecting again
                # subscribes every wanted channel anew, at the reconnect pace.
                self.abort()
            return
        # The reply answers the oldest SUBSCRIBE of that slot: refuse it, the caller retries.
        for channel, pending in list(self._requests.items()):
            if slot_of(channel) == redirect.slot and pending:
                request = pending.popleft()
                if not pending:
                    del self._requests[channel]
                _settle(request.waiters, SlotMoved(f"slot {redirect.slot} moved"))
                break
        self._on_slot_moved()

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
                self._on_confirmed(self._room_of(channel))
            _settle(request.waiters, None)


def _settle(waiters: list[asyncio.Future[None]], error: Exception | None) -> None:
    for waiter in waiters:
        if not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)
    waiters.clear()
