"""``RoomcastClient``: one WebSocket to a roomcast cluster that survives node deaths.

One background task owns the connection: connect, read ``welcome``, rejoin every room with
``since`` (the last position seen), then read frames until the connection ends; then wait a
jittered, growing delay and start again, unless the server said we are at fault (1003, 1007,
1008, 1009) or refused us (HTTP 401/403). A second task per connection writes frames, one at a
time and in order (``link.py``). A rejoin the node refuses for now (``rate_limited``: many
clients of one address came back at once) is sent again on the same connection after the
node's ``retry_after`` plus a full-jitter draw, still with ``since``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Final

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from roomcast.client.backoff import MAX_RETRY_AFTER, Backoff, retry_after_seconds
from roomcast.client.cursor import RoomCursor
from roomcast.client.errors import ClientClosedError, JoinError, LinkLost
from roomcast.client.events import (
    Ack,
    Banned,
    ChatMessage,
    Closed,
    Connected,
    Disconnected,
    Error,
    Event,
    History,
    Joined,
    Left,
    Loss,
    Member,
    Presence,
    Reconnecting,
    Rejoining,
    Removed,
    ServerEvent,
    TokenExpiring,
    Typing,
    UserJoined,
    UserLeft,
    Welcome,
    parse_event,
)
from roomcast.client.link import Link, RoomState
from roomcast.client.outgoing import Outgoing, SendBook
from roomcast.client.waiters import Requests
from roomcast.wire.codes import FATAL_CLOSE_CODES, CloseCode, ErrorCode

# A fixed token, or where to get a fresh one (sync or async): asked at every connection attempt
# and when the server announces the current one's expiry.
TokenSource = str | Callable[[], str | Awaitable[str]] | None
# The user_ids of our own connections remembered to tell our own messages (see is_own).
MAX_OWN_IDS: Final = 256

# The server's answer to a fault of ours (FATAL_CLOSE_CODES, from roomcast.wire.codes, and these
# handshake statuses): reconnecting would only repeat it.
FATAL_HTTP_STATUSES: Final = frozenset({401, 403})
ABNORMAL_CLOSURE: Final = CloseCode.ABNORMAL
# Errors about a join frame's fields, which the server sends without a room.
_JOIN_FIELD_ERRORS: Final = frozenset(
    {ErrorCode.INVALID_ROOM, ErrorCode.INVALID_USERNAME, ErrorCode.INVALID_SINCE}
)
# Refusals that pass by themselves (a join bucket refills, the application's join hook comes
# back): the client's own join of a room it keeps is sent again later on the same connection.
RETRIED_JOIN_ERRORS: Final = frozenset({ErrorCode.RATE_LIMITED, ErrorCode.HOOK_UNAVAILABLE})

log = logging.getLogger("roomcast.client")

_END: Final = object()  # after the last event


class RoomcastClient:
    """An asyncio roomcast client: ``async with RoomcastClient(url, "ann") as client: …``.

    Events come from ``async for event in client``. The connection is kept open: it is retried
    with backoff, every room is rejoined with ``since``, and messages are delivered once each, in
    order, by offset (or a gap is reported as an event).

    Parameters:
        url: the node's or the load balancer's WebSocket URL, ``ws://host:port/chat``
            (``wss://`` for TLS).
        username: your name in rooms; ignored by a server with tokens, which takes the token's.
        token: a connection token (JWT), sent as a subprotocol; required when the server has
            ``ROOMCAST_AUTH_SECRET`` or ``ROOMCAST_AUTH_PUBLIC_KEY`` set. Or a callable (plain
            or async) returning a fresh one: it is asked before every connection attempt and
            when the server says the token is expiring (``token_expiring``), and the new token
            is sent as a ``refresh`` on the open connection, so it outlives any one token.
            :func:`roomcast.client.token_from_url` makes such a callable from the
            application's token URL.
        rooms: rooms joined at start (and rejoined after every reconnect).
        backoff: the delays between attempts; default :class:`Backoff` (0.5 s doubling to 30 s,
            full jitter). A handshake refused with ``Retry-After`` (a busy node's 503, an
            address over its rate's 429) waits that long plus the jittered delay; it is never
            fatal. The same delays space the retries of a refused rejoin (``Rejoining``): the
            error's ``retry_after`` (at most 600 s) plus a draw up to the backoff's bound for
            that room's refusals in a row.
        stable_after: seconds a connection must last for the next failure to start the backoff
            over from its first delay.
        max_attempts: consecutive failed attempts after which the client stops (``closed`` says
            why); ``None``: retry for ever.
        open_timeout: seconds for the TCP connect, the handshake and the server's welcome.
        request_timeout: seconds to wait for the answer to a join, history or presence request.
        max_unsent: messages that may wait for a connection; ``send()`` fails beyond that.
        queue_timeout: seconds a message may wait for a connection before it fails.
        confirm_timeout: seconds a written message may wait for its echo before its fate is
            reported as unknown (it may or may not have been delivered).
        typing_interval: at most one typing notice per room per this many seconds, so a key-press
            handler cannot trip the server's typing limit.
        max_events: events that may wait unread; reading from the server pauses beyond that, so
            a slow application slows the connection (at worst the server closes it with 1013 and
            the client resumes) instead of growing memory.
        max_event_bytes: the same bound in bytes of the frames the waiting events came in; with
            ``max_frame_bytes`` times the few frames websockets reads ahead, it bounds what a
            server can make a client that does not read hold.
        ping_interval: seconds between keepalive pings (and the time a pong may take); ``None``:
            no pings.
        max_frame_bytes: the largest frame accepted from the server; a bigger one closes the
            connection with 1009.
    """

    def __init__(
        self,
        url: str,
        username: str,
        *,
        token: TokenSource = None,
        rooms: Iterable[str] = (),
        backoff: Backoff | None = None,
        stable_after: float = 10.0,
        max_attempts: int | None = None,
        open_timeout: float = 10.0,
        request_timeout: float = 10.0,
        max_unsent: int = 1000,
        queue_timeout: float = 60.0,
        confirm_timeout: float = 30.0,
        typing_interval: float = 1.0,
        max_events: int = 10_000,
        max_event_bytes: int = 8 * 2**20,
        ping_interval: float | None = 20.0,
        max_frame_bytes: int = 2**24,
    ) -> None:
        try:
            parse_uri(url)
        except InvalidURI as exc:
            raise ValueError(f"not a WebSocket URL: {url!r} ({exc})") from None
        self.url = url
        self.username = username
        self._token = token
        self._backoff = backoff or Backoff()
        self._stable_after = stable_after
        self._max_attempts = max_attempts
        self._open_timeout = open_timeout
        self._request_timeout = request_timeout
        self._typing_interval = typing_interval
        self._max_events = max_events
        self._max_event_bytes = max_event_bytes
        self._queued_bytes = 0  # frame bytes behind the events waiting in _events
        self._frame_bytes = 0  # the size of the frame being dispatched, charged to its first event
        self._ping_interval = ping_interval
        self._max_frame_bytes = max_frame_bytes
        self._book = SendBook(max_unsent, queue_timeout, confirm_timeout)
        # The user_id of each of our connections (open mode gives each its own), latest last.
        self._own_ids: dict[str, None] = {}
        self._rooms: dict[str, RoomState] = {
            name: RoomState(RoomCursor(name), kept=True) for name in rooms
        }
        self._events: asyncio.Queue[tuple[Any, int]] = asyncio.Queue()
        self._events_drained = asyncio.Event()
        self._link: Link | None = None
        self._link_changed = asyncio.Event()
        self._serial = 0
        self._next_id = 0
        self._requests = Requests()
        self._background: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._housekeeper: asyncio.Task[None] | None = None
        self.closed: Closed | None = None

    # Lifecycle

    async def __aenter__(self) -> RoomcastClient:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name=f"roomcast-client {self.url}")
            self._housekeeper = asyncio.create_task(self._expire_loop())

    async def close(self) -> None:
        """Stop: what is still queued is written first (for up to a second), then failed."""
        if self.closed is not None:
            return
        link = self._link
        if link is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(link.idle.wait(), 1.0)
        for task in (self._runner, self._housekeeper):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if link is not None:
            await link.ws.close()
        self._finish(Closed("closed by the application"))

    async def drain(self, timeout: float | None = None) -> bool:
        """Until every message sent so far is delivered or given up; False on timeout."""
        pending = {o.outcome for o in self._book.pending()}
        if self._link is not None:
            pending |= {o.outcome for _, o in self._link.frames if o is not None}
        if not pending:
            return True
        _, not_done = await asyncio.wait(pending, timeout=timeout)
        return not not_done

    async def wait_closed(self) -> Closed:
        while self.closed is None:
            await self._link_changed_wait()
        return self.closed

    # State

    @property
    def connected(self) -> bool:
        return self._link is not None and self._link.welcome is not None

    @property
    def node(self) -> str | None:
        link = self._link
        return link.welcome.node if link is not None and link.welcome is not None else None

    @property
    def user_id(self) -> str | None:
        """Our own user_id on the current connection (its welcome; None from an older server)."""
        link = self._link
        return link.welcome.user_id if link is not None and link.welcome is not None else None

    def is_own(self, event: ChatMessage | Typing | UserJoined | UserLeft) -> bool:
        """Whether an event about a user is about us: by its ``user_id`` (any of this client's
        connections'), so a namesake's is not, nor one without (a message the server API
        posted); by name only from a server that sends no user_id."""
        if event.user_id is not None:
            return event.user_id in self._own_ids
        if self._own_ids:
            return False
        state = self._rooms.get(event.room)
        return event.username == (self.username if state is None else state.username)

    def _may_be_our_echo(self, message: ChatMessage, state: RoomState) -> bool:
        """Whether ``message`` may confirm one we sent: ``is_own``, or one without a user_id
        under our name in its room. Nodes of the previous release send no user_id, and during a
        rolling update a client that met a newer node may write through an older one (or a
        resume replays what an older node published): taken for someone else's, each such
        message of ours was reported unconfirmed after ``confirm_timeout``, though delivered.
        The send book still matches it by the offset its ack named, or by its text for one whose
        ack was lost with its connection."""
        if message.user_id is None:
            return message.username == state.username
        return message.user_id in self._own_ids

    def _remember_own_id(self, user_id: str | None) -> None:
        if user_id is None:
            return
        ids = self._own_ids
        ids.pop(user_id, None)
        ids[user_id] = None
        # Bounded: one per connection; a client reconnecting for days forgets its oldest ones.
        if len(ids) > MAX_OWN_IDS:
            del ids[next(iter(ids))]

    @property
    def unsent_count(self) -> int:
        return self._book.unsent_count

    @property
    def in_flight_count(self) -> int:
        return self._book.in_flight_count

    def position(self, room: str) -> tuple[str, int] | None:
        """``(epoch, offset)`` of the last message delivered in ``room`` (or of its join)."""
        state = self._rooms.get(room)
        if state is None or state.cursor.epoch is None:
            return None
        return state.cursor.epoch, state.cursor.offset

    def duplicates_dropped(self, room: str) -> int:
        state = self._rooms.get(room)
        return state.cursor.duplicates_dropped if state is not None else 0

    async def wait_connected(self, timeout: float | None = None) -> str:
        """Until a connection is up (its node id); raises ``ClientClosedError`` if it stopped."""
        async with asyncio.timeout(timeout):
            while True:
                self._raise_if_closed()
                node = self.node
                if node is not None:
                    return node
                await self._link_changed_wait()

    # Commands

    async def join(self, room: str, *, timeout: float | None = None) -> Joined:
        """Join ``room`` (rejoined after every reconnect until ``leave``); its ``Joined``.

        Waits across reconnects, up to ``timeout`` (default: ``request_timeout``); a refusal
        (``forbidden``, ``invalid_room``, ``too_many_rooms``, ``rate_limited``…) of a room not
        joined before raises ``JoinError`` (its ``error.retry_after``: the server's hint, if
        any) and the room is forgotten. A room joined before (or given at start) is the
        client's to keep: its join refused with ``rate_limited`` or ``hook_unavailable`` is
        retried (a ``Rejoining`` event each time) and this call waits on, up to ``timeout``.
        """
        self._raise_if_closed()
        state = self._rooms.setdefault(room, RoomState(RoomCursor(room)))
        link = self._link
        if link is not None and state.live_on == link.serial and state.last_joined is not None:
            return state.last_joined
        waiter: asyncio.Future[Joined] = asyncio.get_running_loop().create_future()
        state.waiters.append(waiter)
        if (
            link is not None
            and link.welcome is not None
            and state.join_sent_on != link.serial
            and state.rejoin_timer is None  # a refused rejoin waits its turn
        ):
            self._send_join(link, room, state)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), self._timeout(timeout))
        finally:
            if waiter in state.waiters:
                state.waiters.remove(waiter)

    async def leave(self, room: str, *, timeout: float | None = None) -> None:
        """Leave ``room``; what was queued for it fails with ``SendFailed(reason="left")``."""
        state = self._rooms.pop(room, None)
        if state is None:
            return
        state.cancel_rejoin()
        self._emit_all(self._book.drop_room(room, "left"))
        link = self._link
        if link is not None and state.live_on == link.serial:
            answer = self._requests.expect("left", room)
            link.write({"type": "leave", "room": room})
            with contextlib.suppress(LinkLost):
                await asyncio.wait_for(answer, self._timeout(timeout))

    async def send(self, room: str, text: str) -> Outgoing:
        """Send ``text`` to ``room`` now, or once connected and rejoined.

        The returned handle's ``wait()`` gives the delivered message (with its offset). A
        message never written is given up as a ``SendFailed`` event when the queue is full
        (``max_unsent``), after ``queue_timeout`` offline, or when the client stops.
        """
        self._raise_if_closed()
        state = self._rooms.get(room)
        if state is None:
            raise ValueError(f"join {room!r} before sending to it")
        self._next_id += 1
        outgoing = Outgoing(self._next_id, room, text)
        link = self._link
        if link is not None and state.live_on == link.serial and not self._book.has_unsent(room):
            link.write({"type": "message", "room": room, "text": text, "id": outgoing.id}, outgoing)
        else:
            failure = self._book.queue(outgoing)
            if failure is not None:
                self._emit(failure)
        return outgoing

    def typing(self, room: str) -> bool:
        """Tell the room we are typing, at most once per ``typing_interval``; whether it went.

        Dropped when offline: a stale typing notice is worse than none. The throttle keeps a
        key-press handler from tripping the server's rate limit (and its 1008 close).
        """
        state = self._rooms.get(room)
        link = self._link
        now = time.monotonic()
        if state is None or link is None or state.live_on != link.serial:
            return False
        if now - state.last_typing < self._typing_interval:
            return False
        state.last_typing = now
        link.write({"type": "typing", "room": room})
        return True

    async def presence(
        self,
        room: str,
        *,
        limit: int | None = None,
        after: str | None = None,
        timeout: float | None = None,
    ) -> Presence:
        """Who is in ``room``: the whole list, or a page (``limit`` names after the username
        ``after``; a big room always answers by pages, see ``Presence.paged`` and ``next``)."""
        extra: dict[str, Any] = {}
        if limit is not None:
            extra["limit"] = limit
        if after is not None:
            extra["after"] = after
        result: Presence = await self._request("presence", room, extra, timeout)
        return result

    async def all_members(
        self, room: str, *, page: int = 1000, timeout: float | None = None
    ) -> AsyncIterator[Member]:
        """Every member of ``room``, page by page (``page`` names each, at most 1000): a name
        present for the whole walk comes exactly once, one that comes or goes meanwhile at
        most once."""
        after: str | None = None
        while True:
            answer = await self.presence(room, limit=page, after=after, timeout=timeout)
            for member in answer.members:
                yield member
            after = answer.next
            if after is None:
                return

    async def history(
        self, room: str, limit: int | None = None, *, timeout: float | None = None
    ) -> History:
        extra = {} if limit is None else {"limit": limit}
        result: History = await self._request("history", room, extra, timeout)
        return result

    # Events

    def __aiter__(self) -> RoomcastClient:
        return self

    async def __anext__(self) -> Event:
        item, size = await self._events.get()
        self._queued_bytes -= size
        if not self._events_full():
            self._events_drained.set()
        if item is _END:
            self._events.put_nowait((_END, 0))  # every later iteration ends too
            raise StopAsyncIteration
        event: Event = item
        return event

    async def next_event(self, timeout: float | None = None) -> Event:
        """The next event; raises ``ClientClosedError`` once the last one was read."""
        try:
            return await asyncio.wait_for(self.__anext__(), timeout)
        except StopAsyncIteration:
            assert self.closed is not None
            raise ClientClosedError(self.closed) from None

    # The connection loop

    async def _run(self) -> None:
        try:
            await self._connect_loop()
        except Exception as exc:  # a bug must not leave the application waiting forever
            log.exception("roomcast client stopped by an internal error")
            self._finish(Closed(f"internal error: {exc!r}"))

    async def _connect_loop(self) -> None:
        attempt = 0
        while self.closed is None:
            cause = ""
            retry_after = 0.0
            try:
                token = await self._fresh_token()
                ws = await connect(
                    self.url,
                    subprotocols=self._subprotocols(token),
                    open_timeout=self._open_timeout,
                    ping_interval=self._ping_interval,
                    ping_timeout=self._ping_interval,
                    max_size=self._max_frame_bytes,
                    # Frames are read as fast as the application takes events (max_events,
                    # max_event_bytes); beyond these few, websockets stops reading the socket.
                    max_queue=4,
                )
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in FATAL_HTTP_STATUSES:
                    self._finish(Closed(f"handshake refused: HTTP {status}", status=status))
                    return
                cause = f"HTTP {status}"
                # A busy node (503) or proxy (429) says when to come back: not before that.
                retry_after = retry_after_seconds(exc.response.headers.get("Retry-After"))
            except InvalidURI as exc:  # e.g. a redirect to something that is not ws://
                self._finish(Closed(f"invalid URL: {exc}"))
                return
            except Exception as exc:  # refused, reset, DNS, timeout, bad handshake: all transient
                cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                opened_at = time.monotonic()
                code, reason = await self._serve(ws, attempt)
                if code in FATAL_CLOSE_CODES:
                    self._emit(Disconnected(code, reason, will_reconnect=False))
                    self._finish(Closed(f"closed by the server: {reason}", code=code))
                    return
                if self.closed is not None:
                    return
                self._emit(Disconnected(code, reason, will_reconnect=True))
                if time.monotonic() - opened_at >= self._stable_after:
                    attempt = 0
                cause = f"closed {code}" + (f": {reason}" if reason else "")
            attempt += 1
            if self._max_attempts is not None and attempt > self._max_attempts:
                self._finish(Closed(f"gave up after {self._max_attempts} attempts: {cause}"))
                return
            # Full jitter on top of the server's hint: clients told the same second spread out.
            delay = retry_after + self._backoff.delay(attempt)
            self._emit(Reconnecting(attempt, delay, cause))
            await asyncio.sleep(delay)

    async def _fresh_token(self) -> str | None:
        source = self._token
        if source is None or isinstance(source, str):
            return source
        token = source()
        return await token if inspect.isawaitable(token) else token

    @staticmethod
    def _subprotocols(token: str | None) -> list[Subprotocol]:
        offered = [Subprotocol("roomcast")]
        if token is not None:
            # Not in the URL: proxies and servers log URLs, not subprotocol headers.
            offered.append(Subprotocol("roomcast.token." + token))
        return offered

    def _refresh_token(self, link: Link) -> None:
        """The server warned that our token expires: send a fresh one on this connection."""
        if self._token is None or isinstance(self._token, str):
            return  # nothing to refresh with: the server closes with 4001, we reconnect

        async def refresh() -> None:
            try:
                token = await self._fresh_token()
            except Exception:  # the application's callback: never let it kill the client
                log.exception("token callback failed; the connection will close at expiry")
                return
            if token is not None and self._link is link:
                link.write({"type": "refresh", "token": token})

        task = asyncio.create_task(refresh())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _serve(self, ws: ClientConnection, attempt: int) -> tuple[int, str]:
        """Run one connection until it ends; its close code and reason."""
        self._serial += 1
        link = Link(self._serial, ws)
        self._link = link
        link.start_writer(self._book.written)
        try:
            first = parse_event(await asyncio.wait_for(ws.recv(), self._open_timeout))
            if isinstance(first, Welcome):
                link.welcome = first
                self._remember_own_id(first.user_id)
                self._emit(Connected(first.node, first.connection, attempt))
            else:
                link.welcome = Welcome("", "")
                self._emit(Connected("", "", attempt))
                self._dispatch(link, first)
            self._signal_link_change()
            for room, state in self._rooms.items():
                self._join_when_due(link, room, state)
            while True:
                if self._events_full():
                    self._events_drained.clear()
                    await self._events_drained.wait()
                raw = await ws.recv()
                self._frame_bytes = len(raw)
                self._dispatch(link, parse_event(raw))
                self._frame_bytes = 0
        except ConnectionClosed as exc:
            return _close_of(exc)
        except TimeoutError:
            await ws.close(CloseCode.PROTOCOL_ERROR, "no welcome")
            return ABNORMAL_CLOSURE, "no welcome from the server"
        finally:
            self._drop_link(link)

    def _drop_link(self, link: Link) -> None:
        if self._link is link:
            self._link = None
        by_room: dict[str, list[Outgoing]] = {}
        for outgoing in link.stop():
            by_room.setdefault(outgoing.room, []).append(outgoing)
        for room, unsent in by_room.items():
            if room in self._rooms:
                self._book.put_back(room, unsent)
            else:
                self._emit_all(o.fail("left") for o in unsent)
        for state in self._rooms.values():
            if state.live_on == link.serial:
                state.live_on = None
            state.cancel_rejoin()  # the next connection rejoins (when its delay is over)
        self._requests.lose_all()
        self._signal_link_change()

    # Frames in

    def _dispatch(self, link: Link, event: ServerEvent) -> None:
        if isinstance(event, ChatMessage):
            self._on_message(link, event)
            return
        if isinstance(event, Joined):
            self._on_joined(link, event)
            return
        if isinstance(event, Ack):
            self._book.acknowledge(event)
            return
        if isinstance(event, Loss):
            self._emit(event)
            state = self._rooms.get(event.room)
            gap = state.cursor.on_loss(event) if state is not None else None
            if gap is not None:
                self._emit(gap)
            return
        if isinstance(event, TokenExpiring):
            self._refresh_token(link)
        if isinstance(event, Removed | Banned):
            self._removed(event.room)
        if isinstance(event, Error) and event.room is None and event.id is None:
            self._unnamed_refusal(link, event)
        if isinstance(event, Error) and event.id is not None:
            failure = self._book.refuse(event)
            if failure is not None:
                self._emit(event)
                self._emit(failure)
                return
        if isinstance(event, Error) and self._on_error(link, event):
            return
        if isinstance(event, Presence):
            self._requests.answer("presence", event.room, event)
        elif isinstance(event, History):
            self._requests.answer("history", event.room, event)
        elif isinstance(event, Left):
            self._requests.answer("left", event.room, event)
        self._emit(event)

    def _on_message(self, link: Link, message: ChatMessage) -> None:
        state = self._rooms.get(message.room)
        if state is None:  # a room being left: its last messages are still news
            self._emit(message)
            return
        deliver, gap = state.cursor.accept(message)
        if gap is not None:
            self._emit(gap)
        if not deliver:
            return
        if self._may_be_our_echo(message, state):
            self._book.confirm(message, link.serial)
        self._emit(message)
        self._settle_resume(link, message.room, state)

    def _on_joined(self, link: Link, joined: Joined) -> None:
        state = self._rooms.get(joined.room)
        self._emit(joined)
        if state is None:
            return
        if not joined.already:
            state.username = joined.username
            outcome = state.cursor.on_joined(joined)
            if outcome is not None:
                self._emit(outcome)
            # After a resume, the replay runs up to the join's offset: an older message of ours
            # not echoed by then was lost with the old connection (or can no longer be known).
            state.resume_target = joined.offset if joined.recovered is True else None
            if joined.recovered is False:
                self._emit_all(self._book.settle_before(joined.room, link.serial))
        state.live_on = link.serial
        state.last_joined = joined
        state.kept = True
        state.rejoin_attempt = 0
        state.rejoin_at = None
        state.cancel_rejoin()
        for waiter in state.waiters:
            if not waiter.done():
                waiter.set_result(joined)
        for outgoing in self._book.take_unsent(joined.room):
            frame = {"type": "message", "room": joined.room, "text": outgoing.text}
            link.write({**frame, "id": outgoing.id}, outgoing)
        self._settle_resume(link, joined.room, state)
        self._signal_link_change()

    def _settle_resume(self, link: Link, room: str, state: RoomState) -> None:
        if state.resume_target is not None and state.cursor.offset >= state.resume_target:
            state.resume_target = None
            self._emit_all(self._book.settle_before(room, link.serial))

    def _removed(self, room: str) -> None:
        """The application took us out of ``room``: not rejoined on reconnect, queued messages
        for it fail (``SendFailed(reason="removed")``), a join waiting for it fails."""
        state = self._rooms.pop(room, None)
        if state is None:
            return
        state.cancel_rejoin()
        self._emit_all(self._book.drop_room(room, "removed"))
        for waiter in state.waiters:
            if not waiter.done():
                waiter.set_exception(JoinError(Error(ErrorCode.FORBIDDEN, "removed", room)))

    def _on_error(self, link: Link, error: Error) -> bool:
        """A refused join: fail its waiters; True when the error was about a join."""
        room = error.room
        if room is None and error.code in _JOIN_FIELD_ERRORS:
            # Refused while parsing the frame, before the server knew the room: ours if only
            # one join is waiting for its answer (frames are answered in order).
            joining = [
                name
                for name, state in self._rooms.items()
                if state.join_sent_on == link.serial and state.live_on != link.serial
            ]
            room = joining[0] if len(joining) == 1 else None
            if room is not None:
                error = Error(error.code, error.reason, room)
        state = self._rooms.get(room) if room is not None else None
        if room is None or state is None or state.join_sent_on != link.serial:
            return False
        if state.live_on == link.serial:
            return False
        self._emit(error)
        state.join_sent_on = None
        if error.code == ErrorCode.UNAVAILABLE:
            # Redis is down for that node: try again later, from another connection.
            closing = asyncio.create_task(link.ws.close(CloseCode.NORMAL, "rejoin later"))
            self._background.add(closing)
            closing.add_done_callback(self._background.discard)
            return True
        if error.code in RETRIED_JOIN_ERRORS and state.kept:
            # A room the client keeps by itself (a rejoin after a reconnect, a room given at
            # start): the refusal passes, so join again later; a join() waiting for it waits
            # on (up to its timeout). A room first asked by join() fails it, as any refusal.
            self._delay_join(link, room, state, error)
            return True
        del self._rooms[room]
        self._emit_all(self._book.drop_room(room, "stopped"))
        for waiter in state.waiters:
            if not waiter.done():
                waiter.set_exception(JoinError(error))
        return True

    async def _request(
        self, kind: str, room: str, extra: dict[str, Any], timeout: float | None
    ) -> Any:
        async with asyncio.timeout(self._timeout(timeout)):
            while True:
                self._raise_if_closed()
                state = self._rooms.get(room)
                if state is None:
                    raise ValueError(f"join {room!r} first")
                link = self._link
                if link is None or state.live_on != link.serial:
                    await self._link_changed_wait()
                    continue
                answer = self._requests.expect(kind, room)
                link.write({"type": kind, "room": room, **extra})
                try:
                    return await answer
                except LinkLost:
                    continue

    # Helpers

    def _delay_join(self, link: Link, room: str, state: RoomState, error: Error) -> None:
        """Send the join of ``room`` again after the server's hint plus a full-jitter draw
        (growing with each refusal in a row, at most the backoff's cap): the clients of one
        address refused together come back spread out, not at one instant."""
        state.rejoin_attempt += 1
        hint = min(MAX_RETRY_AFTER, error.retry_after or 0.0)
        delay = hint + self._backoff.delay(state.rejoin_attempt)
        state.rejoin_at = time.monotonic() + delay
        self._emit(Rejoining(room, state.rejoin_attempt, delay, error.code, error.reason))
        self._schedule_join(link, room, state, delay)

    def _unnamed_refusal(self, link: Link, error: Error) -> None:
        """A frame refused before the node read it (over the connection's frame rate or its
        client's receive budget: ``rate_limited`` with no room and no id) may have been a join,
        which then never gets an answer. The joins unanswered on this connection are sent again
        if still unanswered ``request_timeout`` later (an answer that slow is not coming)."""
        if error.code != ErrorCode.RATE_LIMITED:
            return
        waiting = [
            (room, state, state.join_sent_at)
            for room, state in self._rooms.items()
            if state.join_sent_on == link.serial and state.live_on != link.serial
        ]
        if waiting:
            loop = asyncio.get_running_loop()
            loop.call_later(self._request_timeout, self._resend_unanswered, link, waiting, error)

    def _resend_unanswered(
        self, link: Link, waiting: list[tuple[str, RoomState, float]], error: Error
    ) -> None:
        if self._link is not link:
            return  # the next connection rejoins every room anyway
        for room, state, sent_at in waiting:
            if (
                self._rooms.get(room) is state
                and state.join_sent_on == link.serial
                and state.join_sent_at == sent_at  # that very join, never answered
                and state.live_on != link.serial
            ):
                state.rejoin_attempt += 1
                reason = f"no answer to the join after: {error.reason}"
                self._emit(Rejoining(room, state.rejoin_attempt, 0.0, error.code, reason))
                self._send_join(link, room, state)

    def _join_when_due(self, link: Link, room: str, state: RoomState) -> None:
        """Join ``room`` on a new connection now, or when its refused rejoin's delay ends."""
        wait = 0.0 if state.rejoin_at is None else state.rejoin_at - time.monotonic()
        if wait > 0:
            self._schedule_join(link, room, state, wait)
        else:
            self._send_join(link, room, state)

    def _schedule_join(self, link: Link, room: str, state: RoomState, delay: float) -> None:
        state.cancel_rejoin()
        loop = asyncio.get_running_loop()
        state.rejoin_timer = loop.call_later(delay, self._join_due, link, room, state)

    def _join_due(self, link: Link, room: str, state: RoomState) -> None:
        state.rejoin_timer = None
        if self._link is not link or self._rooms.get(room) is not state:
            return  # the connection ended (the next one rejoins) or the room was left
        if link.serial not in (state.live_on, state.join_sent_on):
            self._send_join(link, room, state)

    def _send_join(self, link: Link, room: str, state: RoomState) -> None:
        frame: dict[str, Any] = {"type": "join", "room": room, "username": self.username}
        since = state.cursor.since()
        if since is not None:
            frame["since"] = since
        state.join_sent_on = link.serial
        state.join_sent_at = time.monotonic()
        link.write(frame)

    async def _expire_loop(self) -> None:
        interval = max(0.05, min(self._book.queue_timeout, self._book.confirm_timeout) / 10)
        while True:
            await asyncio.sleep(interval)
            self._emit_all(self._book.expire(time.monotonic()))

    def _events_full(self) -> bool:
        return (
            self._events.qsize() >= self._max_events or self._queued_bytes >= self._max_event_bytes
        )

    def _emit(self, event: Event) -> None:
        size, self._frame_bytes = self._frame_bytes, 0
        self._queued_bytes += size
        self._events.put_nowait((event, size))

    def _emit_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self._emit(event)

    def _finish(self, closed: Closed) -> None:
        if self.closed is not None:
            return
        self.closed = closed
        self._emit_all(self._book.fail_all("stopped"))
        for state in self._rooms.values():
            state.cancel_rejoin()
            for waiter in state.waiters:
                if not waiter.done():
                    waiter.set_exception(ClientClosedError(closed))
        self._emit(closed)
        self._events.put_nowait((_END, 0))
        self._events_drained.set()
        self._signal_link_change()

    def _raise_if_closed(self) -> None:
        if self.closed is not None:
            raise ClientClosedError(self.closed)

    def _timeout(self, timeout: float | None) -> float:
        return self._request_timeout if timeout is None else timeout

    def _signal_link_change(self) -> None:
        self._link_changed.set()
        self._link_changed = asyncio.Event()

    async def _link_changed_wait(self) -> None:
        await self._link_changed.wait()


def _close_of(exc: ConnectionClosed) -> tuple[int, str]:
    if exc.rcvd is not None:
        return exc.rcvd.code, exc.rcvd.reason
    return ABNORMAL_CLOSURE, "connection lost"
