"""The node's chat logic: commands from clients in, room events out through the broker.

Every room event, including those of local senders, goes through the broker and comes back to be
fanned out, so all members of a room, on every node, see its events in the broker's one order.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from time import monotonic  # not through ``time``: unit tests replace it by a wall clock
from typing import Final

from roomcast.broker import (
    Broker,
    BrokerUnavailable,
    JoinReply,
    NotRun,
    PresenceEntry,
    RoomBanned,
    RoomPresence,
    RoomRateLimited,
    Unconfirmed,
    within,
)
from roomcast.core.auth import AuthError, Identity
from roomcast.core.bigroom import BigRooms, Notice
from roomcast.core.catch_up import CatchUp
from roomcast.core.churn import cause_of
from roomcast.core.history_budget import HistoryBudget
from roomcast.core.history_pages import answer_bytes, complete, first_page, pages_after
from roomcast.core.hooks import Hooks, Refusal
from roomcast.core.lag import Lag
from roomcast.core.members import Delivery, Member
from roomcast.core.node_rooms import NodeRooms
from roomcast.core.presence_pages import PresencePages, answer
from roomcast.core.ratelimit import (
    MESSAGE_KEPT_OVERHEAD,
    BucketPool,
    ConnectionBudget,
    MessageRefusal,
    RateLimiter,
    SharedCharges,
    room_made_cost,
)
from roomcast.core.rooms import RoomRegistry, TooManyRoomsError
from roomcast.core.streams import StreamHub
from roomcast.core.unanswered import Question, Unanswered
from roomcast.core.user_ids import UserIds
from roomcast.runtime.metrics import Metrics
from roomcast.runtime.parse_clock import parse_clock
from roomcast.wire import control, envelope, protocol
from roomcast.wire.codes import CloseCode, ErrorCode, RecoveryStatus
from roomcast.wire.framing import text_frame
from roomcast.wire.hooks import Allow
from roomcast.wire.protocol import (
    History,
    Join,
    Leave,
    Message,
    Presence,
    ProtocolError,
    Refresh,
    Typing,
)
from roomcast.wire.recovery import NOT_REQUESTED, RECOVERED

log = logging.getLogger("roomcast.node")

# Live events held for one joining connection during its join's round trip to Redis.
CATCH_UP_LIMIT = 10_000
# Heavy senders leave a room this share of its message burst (a quarter): see _room_reserve.
ROOM_RESERVE_SHARE: Final = 4
# A join whose own user_joined never came back through the broker within the marker timeout.
_MARKER_LOST = "the join did not come back from the broker"
# Presence and typing events, told apart without decoding their JSON (protocol.encode's form).
_USER_JOINED = b'{"type":"user_joined",'
_USER_LEFT = b'{"type":"user_left",'
_TYPING = b'{"type":"typing",'
_TOO_MANY_TOKENS = "too many tokens checked for your connections together; slow down"
_TOO_MUCH_WRITTEN = (
    "too many bytes of messages kept in history from your requests and connections together; "
    "slow down"
)


def _seconds_until(bucket: RateLimiter, cost: int) -> float:
    """How long until ``bucket`` holds ``cost`` tokens."""
    return max(0.0, (cost - bucket.level) / bucket.rate)


class Node:
    def __init__(
        self,
        node_id: str,
        max_rooms: int,
        max_frame_bytes: int,
        metrics: Metrics,
        history_size: int = 100,
        marker_timeout: float = 5.0,
        *,
        message_rate: tuple[float, int] = (10.0, 20),
        typing_rate: tuple[float, int] = (2.0, 5),
        join_rate: tuple[float, int] = (1.0, 20),
        client_message_rate: tuple[float, int] = (20.0, 40),
        client_join_rate: tuple[float, int] = (5.0, 40),
        client_typing_rate: tuple[float, int] = (10.0, 20),
        client_token_check_rate: tuple[float, int] = (10.0, 64),
        client_history_rate: tuple[float, int] = (4 * 1024 * 1024, 8 * 1024 * 1024),
        client_history_write_rate: tuple[float, int] = (32 * 1024, 12 * 1024 * 1024),
        history_bytes: int = 2 * 1024 * 1024,
        room_message_rate: tuple[float, int] = (100.0, 200),
        room_typing_rate: tuple[float, int] = (20.0, 40),
        lag_timeout: float = 10.0,
        catch_up_bytes: int = 512 * 1024,
        page_bytes: int = 256 * 1024,
        hooks: Hooks | None = None,
        big_room_members: int = 500,
        big_room_interval: float = 1.0,
        max_node_rooms: int | None = None,
        user_ids: UserIds | None = None,
        room_made_bytes: int = room_made_cost(600.0, 86400.0),
    ) -> None:
        self._parse_clock = parse_clock()
        self._catch_up_bytes = catch_up_bytes
        # The user_id of events about a user (core.user_ids); None: a key of this process only
        # (a node alone, unit tests).
        self.user_ids = user_ids or UserIds(os.urandom(32))
        # Bytes of history read and written at a time for answers and catch-ups larger than
        # that (history_pages): what a client that does not read may pin beyond its send bound.
        self._page_bytes = page_bytes
        # The application's join and publish hooks (None: none configured).
        self._hooks = hooks
        self._message_rate = message_rate
        self._typing_rate = typing_rate
        self._join_rate = join_rate
        # Beside the per-connection buckets: one client's many connections (a user's, or an
        # address's in open mode) and one room's many senders are limited too (issue 15).
        self._client_messages = BucketPool(*client_message_rate)
        self._client_joins = BucketPool(*client_join_rate)
        # Rooms without messages whose epoch a client's leaves keep (see _may_keep_silent_epoch).
        self._kept_epochs = BucketPool(*client_join_rate)
        # Typing is a frame to every member too: many connections of one client typing at
        # their own rate reached members at ~530 typing events/s (red team 3).
        self._client_typing = BucketPool(*client_typing_rate)
        # Signature checks after the handshake (refresh, room tokens), per node: the cost is
        # this node's CPU. One user's 64 connections sending ES256 refreshes at the frame rate
        # held a bystander's round trip at 5.4 s (red team 3).
        self._client_token_checks = BucketPool(*client_token_check_rate)
        # Bytes of messages written to rooms' histories, which Redis keeps for
        # ROOMCAST_HISTORY_TTL: room and connection caps bound none of it, since an HTTP post
        # needs no join (one address posting to fresh rooms: ~960 MiB per ttl, red team 11).
        self._client_history_writes = BucketPool(*client_history_write_rate)
        # What a room's first message leaves for a day (its offsets) also spends those bytes.
        self._room_made_cost = room_made_bytes
        # Bytes of `history` answers, shared with the HTTP API (core.history_budget).
        self.history_budget = HistoryBudget(
            *client_history_rate, history_bytes, page_bytes, max_rooms=max_rooms
        )
        self._room_messages = BucketPool(*room_message_rate)
        # Typing per room over all nodes: many clients, each within its own typing limits, made
        # a member receive 1,000 typing events in 3 s (red team 11). Held only while used (an
        # idle bucket is kept until it would have refilled), so no join or leave tends it.
        self._room_typing = BucketPool(*room_typing_rate)
        # What heavy typists leave of a room's typing burst to the others, and each client's
        # pace that tells them: faster than a quarter of its own typing rate, sustained past
        # half its burst. Two clients at their own 10/s kept the room's 20/s empty and every
        # other member's typing was refused (red team 12); a person types a few a second at
        # most. Per node, held only while used, like the room's.
        self._room_typing_reserve = room_typing_rate[1] // ROOM_RESERVE_SHARE
        self._typing_pace = BucketPool(
            client_typing_rate[0] / ROOM_RESERVE_SHARE, max(1, client_typing_rate[1] // 2)
        )
        # What heavy senders leave of a room's burst to the others (see _room_reserve).
        self._room_reserve_tokens = room_message_rate[1] // ROOM_RESERVE_SHARE
        # A client's message pace, per node: past a quarter of its own rate after half its
        # burst it is a heavy sender too, though its own bucket stays above half (see _heavy).
        self._message_pace = BucketPool(
            client_message_rate[0] / ROOM_RESERVE_SHARE, max(1, client_message_rate[1] // 2)
        )
        self.node_id = node_id
        self._max_rooms = max_rooms
        self._max_frame_bytes = max_frame_bytes
        self._history_size = history_size
        self.metrics = metrics
        # The node's rooms, whether members or event streams hold them, within its cap.
        node_rooms = NodeRooms(max_node_rooms)
        self.rooms: RoomRegistry[Member] = RoomRegistry(max_rooms, node_rooms)
        # Rooms above big_room_members connections: presence events coalesced (core.bigroom).
        self.big = BigRooms(big_room_members, big_room_interval)
        self._notice_timers: dict[str, asyncio.TimerHandle] = {}
        self.presence_pages = PresencePages(
            self._read_presence,
            monotonic,
            big_room_interval,
            big_room_members,
        )
        # Server-Sent Events listeners: they share the room subscriptions of the members.
        self.streams = StreamHub(
            history_size,
            self.rooms.has_room,
            metrics.event_streams_open.set,
            page_bytes,
            node_rooms,
        )
        self.broker: Broker | None = None
        self.outbox: Delivery | None = None
        # A client's join and message buckets over every node (set by attach).
        self._shared: SharedCharges | None = None
        # room -> joining connection -> live events held until its join completes
        self._catch_ups: dict[str, dict[Member, CatchUp]] = {}
        # (connection, room) whose user_joined was sent to the broker, though not yet live
        self._announced: set[tuple[Member, str]] = set()
        # (connection, room) whose join reply is in but whose user_joined has not come back yet
        self._marker_waiters: dict[tuple[Member, str], asyncio.Future[None]] = {}
        self._marker_timeout = marker_timeout
        # room -> offset of the last chat message fanned out here: where a lagging member is.
        self._latest: dict[str, int] = {}
        # A lagging member is caught up a send bound at a time (it may hold twice that before
        # it is given up): large pages, so that a reader catches up faster than a burst grows.
        self.lag = Lag(
            self._loop, self._attached_broker, self._latest, catch_up_bytes, lag_timeout, metrics
        )
        # Every open connection: the server API's orders name users, not connections.
        self.connections: set[Member] = set()
        # connection -> rooms a room token let it into (its connection token does not).
        self._granted: dict[Member, set[str]] = {}
        # Messages handed to the broker (or to the publish hook) whose sender has no answer
        # yet: a draining node closes its connections only once each has its ack or error.
        self._unanswered = Unanswered()
        self._received = {
            kind: metrics.frames_received.labels(kind) for kind in protocol.COMMAND_TYPES
        }
        self._published = {
            kind: metrics.messages_published.labels(kind)
            for kind in ("message", "typing", "user_joined", "user_left")
        }

    async def answered(self) -> None:
        """Every message handled so far has its answer queued for its sender."""
        await self._unanswered.all_settled()

    def give_up_answers(self) -> None:
        """A drain stops waiting: every message still without an answer may yet be published
        (core.unanswered), so its sender is told ``unconfirmed`` before the 1001."""
        given_up = self._unanswered.give_up()
        if given_up:
            log.warning("drain: messages answered unconfirmed", extra={"count": len(given_up)})
        for question in given_up:
            if question.request_id is None:
                continue  # the sender asked for no answer
            self.metrics.publish_failures.inc()
            reason = "message may or may not have been sent: the node stopped waiting for Redis"
            self._reject(
                question.conn, ErrorCode.UNCONFIRMED, reason, question.room, question.request_id
            )

    def attach(self, broker: Broker, outbox: Delivery) -> None:
        self.broker = broker
        self.outbox = outbox
        self._shared = SharedCharges(outbox.loop, broker.charge)
        self.history_budget.shared = self._shared.charge
        self.streams.attach(broker, outbox)

    async def _read_presence(self, room: str) -> RoomPresence:
        return await self._attached_broker().presence(room)

    def _loop(self) -> asyncio.AbstractEventLoop:
        assert self.outbox is not None
        return self.outbox.loop

    def _attached_broker(self) -> Broker:
        assert self.broker is not None
        return self.broker

    # Transport callbacks

    def on_open(self, conn: Member) -> None:
        self.connections.add(conn)
        # The message and typing buckets are made on the first message or typing (see
        # _message_bucket): most connections of a big room never speak, and a full bucket
        # made later is the same as one made now.
        client = conn.client_key
        conn.budget = ConnectionBudget(
            client,
            RateLimiter(*self._join_rate),
            self._client_messages.acquire(client),
            self._client_joins.acquire(client),
            self._client_typing.acquire(client),
            self.history_budget.acquire(client),
            self._client_token_checks.acquire(client),
            self._client_history_writes.acquire(client),
        )
        identity = conn.identity
        conn.user_id = (
            UserIds.anonymous() if identity is None else self.user_ids.of_subject(identity.subject)
        )
        conn.send(
            protocol.welcome(
                self.node_id, conn.id, self._max_rooms, self._max_frame_bytes, conn.user_id
            )
        )

    def on_text(self, conn: Member, text: str) -> Awaitable[None] | None:
        try:
            command = protocol.parse_command(text, self._parse_clock)
            if isinstance(command, Message):
                self._received["message"].inc()
                return self._message(conn, command)
            elif isinstance(command, Typing):
                self._received["typing"].inc()
                self._typing(conn, command)
            elif isinstance(command, Join):
                self._received["join"].inc()
                return self._join(conn, command)
            elif isinstance(command, Leave):
                self._received["leave"].inc()
                self._leave(conn, command)
            elif isinstance(command, History):
                self._received["history"].inc()
                room = self._target_room(conn, command.room, command.request_id)
                return self._history(conn, room, command.limit, command.request_id)
            elif isinstance(command, Refresh):
                self._received["refresh"].inc()
                self._refresh(conn, command)
            else:
                self._received["presence"].inc()
                room = self._target_room(conn, command.room, command.request_id)
                return self._presence(conn, room, command)
        except protocol.CostlyFrame as exc:
            self._charge_costly_frame(conn)
            self._reject(conn, exc.code, exc.reason, exc.room, exc.request_id)
        except ProtocolError as exc:
            self._reject(conn, exc.code, exc.reason, exc.room, exc.request_id)
        return None

    @staticmethod
    def _charge_costly_frame(conn: Member) -> None:
        """A frame of many JSON values (a 60 KB one: ~4 ms to parse, as much as 150 plain
        frames of its size) costs its client a whole burst of received bytes: the frames it sent
        with it are refused unparsed, and it may send one such frame per burst's refill (2 s at
        the defaults) rather than 25 a second. Six addresses' bursts of them held a node's CPU
        0.42 s and a bystander at 402 ms p99 (tests/adversarial/test_redteam16_costly_json.py)."""
        inbound = conn.inbound
        if inbound is not None:
            inbound.spend(debt=inbound.burst, cost=inbound.burst)

    def on_close(self, conn: Member) -> None:
        self.connections.discard(conn)
        self._granted.pop(conn, None)
        budget = conn.budget
        if budget is not None:
            self._client_messages.release(budget.client)
            self._client_joins.release(budget.client)
            self._client_typing.release(budget.client)
            self.history_budget.release(budget.client)
            self._client_token_checks.release(budget.client)
            self._client_history_writes.release(budget.client)
        self.lag.forget(conn)
        for room in self.rooms.rooms_of(conn):
            self._drop_membership(conn, room, "connection closed while joining")

    def _drop_membership(self, conn: Member, room: str, why: str) -> None:
        """Take ``conn`` out of ``room`` (live or still joining) and tell the room."""
        # A join still in its round trip is announced (and so must be retracted) only once
        # its script was sent; Redis runs that script before this leave's.
        live = self.rooms.is_live(conn, room)
        announced = (conn, room) in self._announced
        self._announced.discard((conn, room))
        self._drop_catch_up(conn, room)
        waiter = self._marker_waiters.pop((conn, room), None)
        if waiter is not None and not waiter.done():
            waiter.set_exception(BrokerUnavailable(why))
        granted = self._granted.get(conn)
        if granted is not None:
            granted.discard(room)
        username = self.rooms.username(conn, room)
        last_local = self.rooms.leave(conn, room)
        self._room_messages.release(room)
        if (live or announced) and username is not None:
            self._announce_leave(room, conn, username)
        if last_local:
            self._unsubscribe(room)

    # Orders of the server API, from the broker's control channel (every node gets each).

    def on_control(self, payload: bytes) -> None:
        try:
            order = control.parse(payload)
        except control.ControlError as exc:
            self.metrics.broker_bad_payloads.inc()
            log.warning("bad control order", extra={"error": str(exc)})
            return
        if isinstance(order, control.Disconnect):
            self._disconnect(order)
        else:
            self._remove(order)

    def _disconnect(self, order: control.Disconnect) -> None:
        frame = protocol.disconnect(order.reason, order.reconnect)
        code = CloseCode.DISCONNECTED if order.reconnect else CloseCode.DISCONNECTED_FOR_GOOD
        for conn in [c for c in self.connections if self._is_user(c, order.user)]:
            conn.send(frame)
            conn.close(code, _close_reason(order.reason))
        self.streams.end_streams_of(order.user, frame)
        self.metrics.api_orders.labels("disconnect").inc()

    def _remove(self, order: control.Remove) -> None:
        room = order.room
        if order.until_ms is None:
            frame = protocol.removed(room, order.reason)
        else:
            frame = protocol.banned(room, order.reason, order.until_ms)
        for conn in list(self.rooms.all_members(room)):
            if self._is_user(conn, order.user, room):
                self.lag.left(conn, room)
                self._drop_membership(conn, room, "removed from the room while joining")
                conn.send(frame)
        # The user's event streams of the room end too (a banned one cannot reopen: 403).
        self.streams.end_streams_of(order.user, frame, room)
        self.metrics.api_orders.labels("remove" if order.until_ms is None else "ban").inc()

    def _is_user(self, conn: Member, user: str, room: str | None = None) -> bool:
        """The API names a user by its token's ``sub``; in open mode, by its username."""
        identity = conn.identity
        if identity is not None:
            return identity.subject == user
        if room is not None:
            return self.rooms.username(conn, room) == user
        return any(self.rooms.username(conn, r) == user for r in self.rooms.rooms_of(conn))

    def on_rejected(self, conn: Member, code: str) -> None:
        self.metrics.frames_rejected.labels(code).inc()

    def on_lagging(self, conn: Member) -> bool:
        rooms = [room for room in self.rooms.rooms_of(conn) if self.rooms.is_live(conn, room)]
        self.lag.start(conn, rooms)
        return True

    def on_drained(self, conn: Member) -> None:
        self.lag.drained(conn)

    def resync_presence(self) -> None:
        """After an outage or a Redis restart, make Redis' presence match this node again."""
        assert self.broker is not None
        rooms = {
            room: {
                conn.id: PresenceEntry(name, conn.user_id or None)
                for conn, name in self.rooms.all_members(room).items()
            }
            for room in self.rooms.rooms()
        }
        task = asyncio.ensure_future(self.broker.resync_presence(rooms))
        task.add_done_callback(_log_resync)

    # Broker callback: the hot path of fan-out.

    def on_broker_message(self, room: str, payload: bytes) -> None:
        members = self.rooms.members(room)
        holders = self._catch_ups.get(room)
        streamed = self.streams.has_room(room)
        if not members and not holders and not streamed:
            return
        try:
            event = envelope.unpack(payload)
        except (envelope.EnvelopeError, UnicodeDecodeError):
            self.metrics.broker_bad_payloads.inc()
            return
        assert self.outbox is not None
        if not event.offset and self.big.threshold and not self._per_member(room, event):
            # Coalesced (a big room, a churner): no frame for anyone; a joiner still needs its
            # marker.
            if holders and event.exclude:
                self._hold(room, holders, event, markers_only=True)
            return
        if members:
            if event.offset:
                self._latest[room] = event.offset
            elif event.event.startswith(protocol.LOSS_PREFIX):
                # A lagging member gets no room traffic, this notice included, and what it is
                # sent from history once it drained would pass over the loss in silence.
                self.lag.missed_loss(members)
            self.outbox.fan_out(members, text_frame(event.event), event.exclude)
        if holders:
            self._hold(room, holders, event)
        if streamed:
            self.streams.deliver(room, event)
        self.metrics.fanout_latency.observe(max(0.0, time.time() - event.origin_time))

    def _hold(
        self,
        room: str,
        holders: dict[Member, CatchUp],
        event: envelope.Envelope,
        markers_only: bool = False,
    ) -> None:
        for conn, catch_up in holders.items():
            # The joiner's own user_joined (it excludes the joiner) marks its join point. Its
            # user_left excludes it too: a leave just before this join may still be on its way,
            # and taken as the marker it let the join finish before messages it had read. So
            # does the user_joined of a failed attempt on this connection (its script ran, its
            # reply was lost): only this attempt's, told by its origin time, is the marker.
            is_marker = (
                conn.id == event.exclude
                and event.origin_time == catch_up.announced_at
                and event.event.startswith(_USER_JOINED)
            )
            if markers_only and not is_marker:
                continue
            catch_up.see(event.offset, event.event, is_marker)
            if is_marker:
                catch_up.presence_mark = self.big.mark(room)
                waiter = self._marker_waiters.pop((conn, room), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)

    def _per_member(self, room: str, payload: envelope.Envelope) -> bool:
        """False for a presence or typing event of a big room, or a churner's join or leave:
        counted, not fanned out."""
        event = payload.event
        joined = event.startswith(_USER_JOINED)
        if joined or event.startswith(_USER_LEFT):
            step = self.big.note(room, joined, monotonic(), payload.cause)
            if step.notice is not None:
                self._tell(step.notice)
            if step.flush_in is not None:
                self._notice_timers[room] = self._loop().call_later(
                    step.flush_in, self._flush_notice, room
                )
            if not step.deliver:
                kind = "user_joined" if joined else "user_left"
                self.metrics.big_room_coalesced.labels(kind).inc()
            return step.deliver
        if event.startswith(_TYPING) and self.big.is_big(room):
            # Another node's member typed before its node counted the room as big.
            self.metrics.big_room_coalesced.labels("typing").inc()
            return False
        return True

    def _flush_notice(self, room: str) -> None:
        self._notice_timers.pop(room, None)
        notice = self.big.flush(room, monotonic())
        if notice is not None:
            self._tell(notice)

    def _tell(self, notice: Notice) -> None:
        """A presence_changed to the room's local members and event streams."""
        assert self.outbox is not None
        room = notice.room
        frame = protocol.presence_changed(
            room, notice.joined, notice.left, notice.connections, notice.big
        )
        self.metrics.big_room_notices.inc()
        members = self.rooms.members(room)
        if members:
            self.outbox.fan_out(members, text_frame(frame), "")
        if self.streams.has_room(room):
            self.streams.deliver(room, envelope.Envelope(time.time(), "", 0, frame))

    # Commands

    async def _join(self, conn: Member, command: Join) -> None:
        room = command.room
        if conn.closed:
            return
        named = self._joiner_name(conn, command)
        if named is None:
            return
        username, role = named
        if username != command.username:  # the token's name (a frozen dataclass costs to copy)
            command = Join(room, username, command.since, command.request_id, command.room_token)
        joining = self.rooms.username(conn, room) is None
        if joining and not self._may_join(conn):
            # Each join announces user_joined (and its leave user_left) to the whole room.
            reason = "too many joins; slow down"
            wait = self._join_wait(conn)
            self._reject(conn, ErrorCode.RATE_LIMITED, reason, room, command.request_id, wait)
            return
        data = None
        hooks = self._hooks
        if joining and hooks is not None and hooks.asks_join(room):
            # Asked before anything of the join happens: a refusal leaves no trace in the room.
            allowed = await self._ask_join(hooks, conn, command)
            if allowed is None:
                return
            data = allowed.data
        # What a join with `since` missed is read from history: charged to the client's
        # history budget like a `history` answer (rejoining with an old `since` over and over
        # read 2 MiB each). A client that owes joins without it, told `overloaded`.
        budget = conn.budget
        reserved: int | None = None
        recover = True
        if command.since is not None and budget is not None and joining:
            reserved = self.history_budget.reserve_catch_up(budget.client_history, room)
            recover = reserved is not None
        missed: int | None = None
        try:
            missed = await self._enter_room(conn, command, username, role, data, recover)
        finally:
            if budget is not None and reserved is not None:
                history, bucket = self.history_budget, budget.client_history
                if missed is None:
                    bucket.refund(reserved)
                else:
                    history.settle(budget.client, bucket, room, reserved, missed, remember=False)

    async def _enter_room(
        self,
        conn: Member,
        command: Join,
        username: str,
        role: str | None,
        data: object,
        recover: bool,
    ) -> int | None:
        """The join from taking the membership on; returns the bytes of the missed messages it
        read (None: it read none, or did not get that far)."""
        room = command.room
        try:
            result = self.rooms.join(conn, room, username)
        except TooManyRoomsError as exc:
            self._reject(conn, ErrorCode.TOO_MANY_ROOMS, str(exc), room, command.request_id)
            return None
        if not result.already_member:
            self._room_messages.acquire(room)
        if result.already_member:
            already = {"type": "joined", "room": room, "already": True}
            if command.request_id is not None:
                already["id"] = command.request_id
            conn.send(protocol.encode(already))
            return None
        if result.first_local_member:  # the count moves only then (and on the last leave)
            self.metrics.rooms_local.set(self.rooms.room_count)
        catch_up = CatchUp(CATCH_UP_LIMIT, self._catch_up_bytes)
        self._catch_ups.setdefault(room, {})[conn] = catch_up
        entering = command
        if not recover:
            # Nothing missed is read; the answer says `overloaded` (the client reloads history).
            entering = Join(room, username, None, command.request_id, command.room_token)
            catch_up.overflowed = True
        try:
            reply = await self._enter(conn, entering, catch_up)
        except RoomBanned as exc:
            self._refuse_banned(conn, command, exc)
            return None
        except BrokerUnavailable as exc:
            self._join_failed(conn, command, username, exc)
            return None
        missed = sum(map(len, reply.missed))
        self._drop_catch_up(conn, room)
        self._announced.discard((conn, room))
        self._counted(room, reply, catch_up)
        if conn.closed or not self.rooms.activate(conn, room):
            return missed
        if command.room_token is not None and conn.identity is not None:
            self._granted.setdefault(conn, set()).add(room)
        newest = max([reply.offset, *(offset for offset, _ in catch_up.held)])
        # A loss notice held during the join is in no history: the lag path, which sends
        # none of the held events, must not pass over it (see Lag.missed_loss).
        lost = any(event.startswith(protocol.LOSS_PREFIX) for _, event in catch_up.held)
        lag_from = self._send_join_result(conn, command, reply, catch_up, data, role)
        self._went_live(conn, room, reply.offset if lag_from is None else newest)
        if lag_from is not None:
            self.lag.start_at(conn, room, lag_from, reply.epoch)
            if lost:
                self.lag.missed_loss([conn])
        return missed

    def _counted(self, room: str, reply: JoinReply, catch_up: CatchUp) -> None:
        """The join script's count of the room's connections: the big-room count from here."""
        if reply.connections is not None:
            mark = catch_up.presence_mark
            shrunk = self.big.counted(room, reply.connections, mark, monotonic())
            if shrunk is not None:
                self._tell(shrunk)

    def _went_live(self, conn: Member, room: str, offset: int) -> None:
        """Where the room is for members here: one lagging from now on has all up to it."""
        self._latest[room] = max(self._latest.get(room, 0), offset)
        if conn.lagging:
            self.lag.joined(conn, room, offset)

    def _joiner_name(self, conn: Member, command: Join) -> tuple[str, str | None] | None:
        """The name the joiner has in the room and its role there (from a room token), or None
        when refused (the client was told)."""
        room = command.room
        identity = conn.identity
        if identity is not None:
            # With authentication on, the token names the user: a join cannot pick a name.
            refusal = self._may_enter(conn, identity, command)
            if isinstance(refusal, ProtocolError):
                self._reject(conn, refusal.code, refusal.reason, room, command.request_id)
                return None
            return identity.name, refusal
        if command.username is None:
            reason = "'username' is required"
            self._reject(conn, ErrorCode.INVALID_USERNAME, reason, room, command.request_id)
            return None
        return command.username, None

    def _may_enter(
        self, conn: Member, identity: Identity, command: Join
    ) -> ProtocolError | str | None:
        """Why ``conn`` may not join (an error), or its role there from a room token (or None)."""
        room = command.room
        role = None
        if command.room_token is not None:
            if not self._may_check_token(conn):
                return ProtocolError(ErrorCode.RATE_LIMITED, _TOO_MANY_TOKENS, room)
            try:
                grant = conn.verify_room_token(command.room_token)
            except AuthError as exc:
                return ProtocolError(ErrorCode.INVALID_ROOM_TOKEN, f"{exc.code}: {exc.reason}")
            if grant.subject != identity.subject:
                return ProtocolError(ErrorCode.FORBIDDEN, "the room token is for another user")
            if grant.room != room:
                return ProtocolError(ErrorCode.FORBIDDEN, "the room token is for another room")
            role = grant.role
        elif not identity.may_join(room):
            return ProtocolError(ErrorCode.FORBIDDEN, f"your token does not allow {room!r}")
        pair = control.direct_room_members(room)
        if pair is not None and identity.subject not in pair:
            # Whatever `rooms` pattern matched: a direct room is its two users' alone.
            return ProtocolError(ErrorCode.FORBIDDEN, f"{room!r} is a direct room of others")
        return role

    def _join_failed(
        self, conn: Member, command: Join, username: str, exc: BrokerUnavailable
    ) -> None:
        room = command.room
        self._drop_catch_up(conn, room)
        # Not when a removal (or the close) already took it out of the room.
        if not conn.closed and self.rooms.username(conn, room) is not None:
            # Retract what may have been announced; Redis orders it after the join script.
            # Not when Redis refused the script at once (NotRun): nothing was announced, and a
            # user_left for somebody who never joined would reach every member.
            if (conn, room) in self._announced and not isinstance(exc, NotRun):
                self._announce_leave(room, conn, username)
            if self.rooms.leave(conn, room):
                self._unsubscribe(room)
            self._room_messages.release(room)
            reason = f"cannot join now: {exc}"
            self._reject(conn, ErrorCode.UNAVAILABLE, reason, room, command.request_id)
        self._announced.discard((conn, room))

    def _refuse_banned(self, conn: Member, command: Join, ban: RoomBanned) -> None:
        """Nothing was recorded or announced in Redis: undo the local join only."""
        room = command.room
        self._drop_catch_up(conn, room)
        self._announced.discard((conn, room))
        if self.rooms.username(conn, room) is not None:
            if self.rooms.leave(conn, room):
                self._unsubscribe(room)
            self._room_messages.release(room)
        reason = f"banned from {room!r} until {ban.until_ms} (ms): {ban.reason}"
        self._reject(conn, ErrorCode.BANNED, reason, room, command.request_id)

    async def _ask_join(self, hooks: Hooks, conn: Member, command: Join) -> Allow | None:
        """The join hook's allowance, or None when refused (the client was told) or closed."""
        identity = conn.identity
        subject = None if identity is None else identity.subject
        assert command.username is not None
        verdict = await hooks.join(
            conn.id, command.room, subject, command.username, conn.client_address, conn.client_key
        )
        if conn.closed:
            return None
        if isinstance(verdict, Refusal):
            if verdict.code == ErrorCode.JOIN_DENIED:
                # A denied join costs the node a call and tells nobody, so no leave ever spends
                # for it: asked over and over (a connection's join burst, then again on a new
                # connection), one user made the node call the backend without end. It spends
                # like a leave; a hook failure (the backend's fault) does not.
                self._spend_churn(conn)
            self._reject(conn, verdict.code, verdict.reason, command.room, command.request_id)
            return None
        return verdict

    async def _enter(self, conn: Member, command: Join, catch_up: CatchUp) -> JoinReply:
        """Subscribe, run the join script, and wait until the stream reaches our join point."""
        assert self.broker is not None
        room, username = command.room, command.username
        assert username is not None
        # Also for later local joiners: the first joiner's SUBSCRIBE may still be in flight,
        # and nobody may speak in the room before this node surely listens to it.
        await self.broker.subscribe(room)
        if conn.closed:
            raise BrokerUnavailable("connection closed while joining")
        event = protocol.user_joined(room, username, conn.user_id)
        cause = cause_of(conn.client_key)  # whose churn it is (core.churn)
        catch_up.announced_at = time.time()
        announce = envelope.pack(catch_up.announced_at, event, conn.id, cause=cause)
        self._announced.add((conn, room))
        self._published["user_joined"].inc()
        user = conn.identity.subject if conn.identity is not None else username
        reply = await self.broker.join(
            room, conn.id, username, command.since, announce, user, conn.user_id or None
        )
        if not catch_up.marker_seen:
            assert self.outbox is not None
            loop = self.outbox.loop  # not asyncio.get_running_loop(): a getpid() on 3.11
            waiter: asyncio.Future[None] = loop.create_future()
            self._marker_waiters[(conn, room)] = waiter
            try:
                await within(loop, waiter, self._marker_timeout, _MARKER_LOST)
            finally:
                self._marker_waiters.pop((conn, room), None)
        return reply

    def _send_join_result(
        self,
        conn: Member,
        command: Join,
        reply: JoinReply,
        catch_up: CatchUp,
        data: object,
        role: str | None = None,
    ) -> int | None:
        """Send the join's answer and what it catches up; returns the offset to catch up from
        through the lag path instead, when the missed messages are more than a page."""
        room, username = command.room, command.username
        assert username is not None
        status = reply.status
        events = catch_up.finish(reply)
        lag_from = None
        if catch_up.overflowed:
            # Part of the stream was not held: say so, and send none of it (the client reloads).
            status, events = RecoveryStatus.OVERLOADED, []
        elif (
            status == RECOVERED
            and command.since is not None
            and sum(map(len, reply.missed)) > self._page_bytes
        ):
            # More than a page missed: not sent at once but read from history page by page as
            # the client drains (core.lag), the held live events included (chat messages are
            # in history; typing and presence events of the meantime are not replayed).
            lag_from, events = command.since.offset, []
        request_id = command.request_id
        connections = self.big.size(room) if self.big.is_big(room) else None
        if command.since is None:
            conn.send(
                protocol.joined(
                    room,
                    username,
                    reply.epoch,
                    reply.offset,
                    request_id=request_id,
                    data=data,
                    role=role,
                    connections=connections,
                    user_id=conn.user_id,
                )
            )
        else:
            recovered = status == RECOVERED
            self.metrics.recoveries.labels(status).inc()
            conn.send(
                protocol.joined(
                    room,
                    username,
                    reply.epoch,
                    reply.offset,
                    recovered,
                    None if recovered or status == NOT_REQUESTED else status,
                    request_id,
                    data,
                    role,
                    connections,
                    conn.user_id,
                )
            )
        for event in events:
            conn.send(event)
        return lag_from

    def _leave(self, conn: Member, command: Leave) -> None:
        room = self._target_room(conn, command.room, command.request_id)
        username = self.rooms.username(conn, room)
        assert username is not None
        self.lag.left(conn, room)
        last_local = self.rooms.leave(conn, room)
        self._room_messages.release(room)
        granted = self._granted.get(conn)
        if granted is not None:
            granted.discard(room)
        conn.send(protocol.left(room, command.request_id))
        self._spend_churn(conn)
        # Before the unsubscribe: the leave reads what this node knows of the room.
        self._announce_leave(room, conn, username)
        if last_local:
            self._unsubscribe(room)

    def _refresh(self, conn: Member, command: Refresh) -> None:
        """A new token for the same user, on the same connection, before the old one expires."""
        request_id = command.request_id
        if not self._may_check_token(conn):
            raise ProtocolError(ErrorCode.RATE_LIMITED, _TOO_MANY_TOKENS, None, request_id)
        try:
            identity = conn.verify_token(command.token)
        except AuthError as exc:
            raise ProtocolError(
                ErrorCode.INVALID_TOKEN, f"{exc.code}: {exc.reason}", None, request_id
            ) from None
        current = conn.identity
        if current is None or (identity.subject, identity.name) != (current.subject, current.name):
            reason = "a refreshed token must name the same user ('sub' and 'name')"
            raise ProtocolError(ErrorCode.FORBIDDEN, reason, None, request_id)
        granted = self._granted.get(conn, set())
        for room in self.rooms.rooms_of(conn):
            if room not in granted and not identity.may_join(room):
                reason = f"the new token does not allow {room!r}: leave it first"
                raise ProtocolError(ErrorCode.FORBIDDEN, reason, room, request_id)
        conn.adopt(identity)
        expires = identity.expires
        assert expires is not None  # required by the verifier
        conn.send(protocol.refreshed(int(expires * 1000), request_id))

    def _message(self, conn: Member, command: Message) -> Awaitable[None] | None:
        request_id = command.request_id
        room = self._target_room(conn, command.room, request_id)
        if not self._bucket(conn, "message").allow():
            self._rate_limited(conn, "message", room, request_id)
            return None
        reserve = self._room_reserve(conn)
        refusal = self._shared_message_limit(conn, room, len(command.text), reserve)
        if refusal is not None:
            self._reject(conn, ErrorCode.RATE_LIMITED, refusal, room, request_id)
            return None
        username = self.rooms.username(conn, room)
        assert username is not None
        hooks = self._hooks
        if hooks is not None and hooks.asks_publish(room):
            # The connection's later frames wait for this one: its messages keep their order.
            return self._moderated(hooks, conn, room, username, command.text, request_id, reserve)
        self._publish_message(conn, room, username, command.text, request_id, reserve=reserve)
        return None

    async def _moderated(
        self,
        hooks: Hooks,
        conn: Member,
        room: str,
        username: str,
        text: str,
        request_id: protocol.RequestId,
        reserve: int,
    ) -> None:
        """The publish hook first: it may refuse or rewrite the message before its offset."""
        identity = conn.identity
        subject = None if identity is None else identity.subject
        question = Question(self._unanswered, conn, room, request_id)
        try:
            verdict = await hooks.publish(conn.id, room, subject, username, text, conn.client_key)
            if isinstance(verdict, Refusal):
                self._reject(conn, verdict.code, verdict.reason, room, request_id)
                return
            # Published even if the sender closed meanwhile: the backend was told it is
            # accepted (and may have stored it), so the room shows it too.
            self._publish_message(
                conn, room, username, verdict.text, request_id, verdict.message_id, reserve
            )
        finally:
            question.settle()

    def _publish_message(
        self,
        conn: Member,
        room: str,
        username: str,
        text: str,
        request_id: protocol.RequestId,
        message_id: str | None = None,
        reserve: int = 0,
    ) -> None:
        assert self.broker is not None
        now = time.time()
        prefix = protocol.chat_message_prefix(
            room, username, text, int(now * 1000), message_id, conn.user_id
        )
        self._published["message"].inc()
        question = Question(self._unanswered, conn, room, request_id)
        self.broker.publish_message(
            room,
            envelope.head(now),
            prefix,
            FailureReporter(self, conn, "message", room, request_id, question.settle),
            Acknowledger(conn, room, request_id, question.settle, self._room_made),
            reserve=reserve,
        )

    def _may_join(self, conn: Member) -> bool:
        budget = conn.budget
        if budget is None:
            return True
        # The client's bucket is spent by leaves (see _spend_churn) and only checked here: a
        # hundred users behind one address may each join once, but joining and leaving over
        # and over (each a notice to every member) soon stops.
        return budget.joins.allow() and budget.client_joins.ready()

    def _join_wait(self, conn: Member) -> float:
        """Seconds until a refused join would pass (the error's ``retry_after``): the later of
        the connection's and the client's join buckets, at least 10 ms."""
        budget = conn.budget
        assert budget is not None  # only a budgeted connection is refused a join
        wait = max(budget.joins.seconds_until_ready(), budget.client_joins.seconds_until_ready())
        return max(0.01, math.ceil(wait * 100) / 100)

    def _spend_churn(self, conn: Member) -> None:
        """A leave spends a token of the client's join bucket, owing up to a whole burst: join
        and leave over and over, and joins stop until it is paid back. A close spends nothing:
        a hundred users of one address going home must not lock its next joins out (churn by
        reconnecting is bounded by each connection's own join bucket and the handshakes)."""
        budget = conn.budget
        if budget is not None:
            self._spend_leave(budget.client, budget.client_joins)

    def _spend_leave(self, client: str, joins: RateLimiter) -> None:
        """A leave's token of ``client``'s join bucket, here and over all nodes."""
        joins.spend(joins.burst)
        self._charge_shared(client, "join", joins, debt=joins.burst)

    def admit_stream(self, client: str) -> float | None:
        """Whether ``client`` may open an event stream now (None), else the seconds until it
        may: a stream subscribes its node to the room as a join does, and needs a token of the
        same bucket over all nodes (its end spends one: :meth:`stream_left`)."""
        pool = self._client_joins
        bucket = pool.acquire(client)
        try:
            return None if bucket.ready() else max(0.01, bucket.seconds_until_ready())
        finally:
            pool.release(client)

    def stream_left(self, client: str) -> None:
        """A stream of ``client`` ended by its client: a leave (see _spend_churn)."""
        pool = self._client_joins
        bucket = pool.acquire(client)
        try:
            self._spend_leave(client, bucket)
        finally:
            pool.release(client)

    def admit_message(self, client: str, size: int) -> int | MessageRefusal:
        """Whether ``client`` (a token's ``sub:`` or open mode's ``ip:`` key) may post one more
        message of ``size`` characters over the HTTP API, against the same buckets as its
        WebSocket messages over all nodes, and if so the room's reserve it must leave (see
        _room_reserve)."""
        pool, writes = self._client_messages, self._client_history_writes
        bucket = pool.acquire(client)
        written = writes.acquire(client)
        try:
            reserve = self._room_reserve_tokens if self._heavy(client, bucket) else 0
            cost = size + MESSAGE_KEPT_OVERHEAD
            if not written.allow(cost):
                return MessageRefusal(_TOO_MUCH_WRITTEN, _seconds_until(written, cost))
            if not bucket.allow():
                written.refund(cost)
                reason = "too many messages from your requests and connections together"
                return MessageRefusal(f"{reason}; slow down", bucket.seconds_until_ready())
            self._charge_message(client, bucket)
            self._charge_history_write(client, written, cost)
            return reserve
        finally:
            pool.release(client)
            writes.release(client)

    def _room_made(self, conn: Member) -> None:
        """``conn``'s message was its room's first (offset 1): charged the offsets it leaves."""
        budget = conn.budget
        if budget is not None:
            self._charge_room_made(budget.client, budget.client_history_writes)

    def room_made(self, client: str) -> None:
        """An HTTP post of ``client`` was its room's first (offset 1)."""
        pool = self._client_history_writes
        try:
            self._charge_room_made(client, pool.acquire(client))
        finally:
            pool.release(client)

    def _charge_room_made(self, client: str, bucket: RateLimiter) -> None:
        """Charged after the fact (the broker's answer says the room was made): owing up to a
        burst, like the history writes themselves."""
        cost = self._room_made_cost
        bucket.spend(bucket.burst, cost)
        self._charge_history_write(client, bucket, cost)

    def _charge_message(self, client: str, bucket: RateLimiter) -> None:
        """Charge a message to the client's message bucket over all nodes, owing up to its
        burst. Owing one token at most forgave a token whenever two nodes' charges met at the
        floor, and each node then admitted one message per two tokens' time of its own: a client
        spread over N nodes sent about N x 10 a second (4 nodes: 33/s past the burst where 20/s
        is the limit), not the limit plus what each node admits during one round trip."""
        self._charge_shared(client, "msg", bucket, debt=bucket.burst)

    def _charge_history_write(self, client: str, bucket: RateLimiter, cost: int) -> None:
        """Charge a message's bytes, taken from the client's history-write bucket on this
        node, to its copy over all nodes."""
        # Owing up to a burst: what several nodes admitted on their own copies' refills is all
        # counted (owing one message, three nodes let ~2.7 times the rate through).
        self._charge_shared(client, "kept", bucket, debt=bucket.burst, cost=cost)

    def _may_check_token(self, conn: Member) -> bool:
        """A token check after the handshake (a refresh, a join's room token) may run: each
        costs a signature check, ~0.3 ms for ES256 here, where a frame costs ~20 us."""
        budget = conn.budget
        return budget is None or budget.client_token_checks.allow()

    def _charge_shared(
        self, owner: str, kind: str, bucket: RateLimiter, debt: int = 1, cost: int = 1
    ) -> None:
        if self._shared is not None:
            self._shared.charge(owner, kind, bucket, debt, cost)

    def _room_reserve(self, conn: Member) -> int:
        """The tokens of a room's message bucket this sender must leave to the others: none
        while its client (a token's user, an open-mode address) has half its own message burst
        or more, else a quarter of the room's burst. A room takes 100 messages a second from
        everybody together; a few users, each within their own 20/s, kept it empty and the
        room's other members had their messages refused (red team 10). Heavy senders share
        what is above the reserve; whoever writes like a person finds the reserve there."""
        budget = conn.budget
        if budget is None:
            return 0
        return (
            self._room_reserve_tokens if self._heavy(budget.client, budget.client_messages) else 0
        )

    def _heavy(self, client: str, bucket: RateLimiter) -> bool:
        """Whether a client spent half its message burst or more (and has not refilled it), or
        sends faster than a quarter of its rate past half its burst: users sending just under
        their own 20/s after just under half their burst never spent half, and twelve of them
        kept the room empty for a member writing like a person (red team 12). Each message
        spends the client's pace here."""
        return not self._message_pace.allow(client) or bucket.level < bucket.burst / 2

    def _shared_message_limit(
        self, conn: Member, room: str, size: int, reserve: int = 0
    ) -> str | None:
        """Why a message within its connection's limit is still refused, or None.

        Shared buckets refuse with an error frame but never close: their strikes are the sum
        of several senders', not proof that this one ignores its errors."""
        budget = conn.budget
        if budget is None:
            return self._room_refusal(room, reserve)
        # Characters, not bytes: len() of a str is free here, and a frame holds at most
        # ROOMCAST_MAX_FRAME_BYTES bytes however they encode.
        cost = size + MESSAGE_KEPT_OVERHEAD
        writes = budget.client_history_writes
        # Taken first and given back if another bucket refuses: a message refused for its
        # bytes spends none of the others, and the common case costs one allow().
        if not writes.allow(cost):
            return _TOO_MUCH_WRITTEN
        if not budget.client_messages.allow():
            writes.refund(cost)
            return "too many messages from your connections together; slow down"
        self._charge_message(budget.client, budget.client_messages)
        refusal = self._room_refusal(room, reserve)
        if refusal is not None:
            writes.refund(cost)
            return refusal
        self._charge_history_write(budget.client, writes, cost)
        return None

    def _room_refusal(self, room: str, reserve: int) -> str | None:
        room_bucket = self._room_messages.get(room)
        if room_bucket is not None and not room_bucket.allow_keeping(reserve):
            return f"room {room!r} is receiving too many messages; try again shortly"
        return None

    def _typing(self, conn: Member, command: Typing) -> None:
        room = self._target_room(conn, command.room, command.request_id)
        if not self._bucket(conn, "typing").allow():
            self._rate_limited(conn, "typing", room, command.request_id)
            return
        budget = conn.budget
        if budget is not None:
            if not budget.client_typing.allow():
                reason = "too much typing from your connections together; slow down"
                self._reject(conn, ErrorCode.RATE_LIMITED, reason, room, command.request_id)
                return
            # Owing up to a burst, as messages do (see _charge_message: one token forgave).
            typing = budget.client_typing
            self._charge_shared(budget.client, "typing", typing, debt=typing.burst)
        if self.big.is_big(room):
            # Off in big rooms: one typing is a frame to every member (docs/protocol.md).
            self.metrics.big_room_coalesced.labels("typing").inc()
            return
        reserve = 0 if budget is None else self._typing_reserve(budget.client)
        if not self._room_takes_typing(room, reserve):
            reason = f"room {room!r} has too much typing; try again shortly"
            self._reject(conn, ErrorCode.RATE_LIMITED, reason, room, command.request_id)
            return
        username = self.rooms.username(conn, room)
        assert username is not None and self.broker is not None
        self._published["typing"].inc()
        self.broker.publish(
            room,
            envelope.pack(time.time(), protocol.typing(room, username, conn.user_id), conn.id),
            FailureReporter(self, conn, "typing", room, command.request_id),
        )

    def _typing_reserve(self, client: str) -> int:
        """The tokens of a room's typing bucket this client's typing must leave to the others:
        none while it types at a person's pace, else a quarter of the room's burst (as heavy
        message senders leave of a room's messages, see _room_reserve)."""
        return 0 if self._typing_pace.allow(client) else self._room_typing_reserve

    def _room_takes_typing(self, room: str, reserve: int) -> bool:
        """Whether the room's typing bucket (over all nodes) has a token beyond ``reserve``,
        taken if so."""
        pool = self._room_typing
        bucket = pool.acquire(room)
        try:
            if not bucket.allow_keeping(reserve):
                return False
            # Owing up to a burst, as the history writes: each node's copy refills on its own,
            # and owing one token let the nodes together through at about twice the rate.
            self._charge_shared(room, "typing-room", bucket, debt=bucket.burst)
            return True
        finally:
            pool.release(room)

    async def _history(
        self, conn: Member, room: str, limit: int | None, request_id: protocol.RequestId
    ) -> None:
        broker = self.broker
        assert broker is not None
        budget = conn.budget
        reserved = 0
        if budget is not None:
            held = await self.history_budget.reserve(budget.client_history, room, budget.client)
            if held is None:
                reason = "too much history read by your connections together; try again shortly"
                self._reject(conn, ErrorCode.RATE_LIMITED, reason, room, request_id)
                return
            reserved = held
        size = self._page_bytes
        try:
            page = await first_page(broker, room, min(limit or self._history_size, 10_000), size)
        except BaseException as exc:
            # Given back whatever ended the read (a cancelled task too): requests for the room
            # wait for one learning its size (core.history_budget).
            if budget is not None:
                self.history_budget.cancel(budget.client_history, room, reserved, budget.client)
            if not isinstance(exc, BrokerUnavailable):
                raise
            reason = f"history unavailable: {exc}"
            self._reject(conn, ErrorCode.UNAVAILABLE, reason, room, request_id)
            return
        if budget is not None:
            used = page.total or sum(map(len, page.messages))
            whole = limit is None or limit >= self._history_size
            self.history_budget.settle(
                budget.client, budget.client_history, room, reserved, used, whole=whole
            )
        if complete(page):
            conn.send(protocol.history(room, page.epoch, page.offset, page.messages, request_id))
            return
        # Larger than a page: written in pieces, each page read once the client took the
        # previous one.
        head, tail = protocol.history_parts(room, page.epoch, page.offset, request_id)
        after = page.after + len(page.messages)

        async def pieces() -> AsyncIterator[bytes]:
            yield head + b",".join(page.messages)
            async for messages in pages_after(broker, room, page.epoch, after, page.offset, size):
                yield b"," + b",".join(messages)
            yield tail

        await conn.send_pieces(answer_bytes(page, head, tail), pieces())

    async def _presence(self, conn: Member, room: str, command: Presence) -> None:
        request_id = command.request_id
        budget = conn.budget
        # Charged to the client's history budget: a ~40-byte request answered with the room's
        # member list (core.history_budget.charge_answer).
        if budget is not None and not budget.client_history.ready():
            reason = "too much presence and history read by your connections together; slow down"
            self._reject(conn, ErrorCode.RATE_LIMITED, reason, room, request_id)
            return
        pages = self.presence_pages
        try:
            snap = await pages.snapshot(room)
        except BrokerUnavailable as exc:
            reason = f"presence unavailable: {exc}"
            self._reject(conn, ErrorCode.UNAVAILABLE, reason, room, request_id)
            return
        big = pages.is_big(snap) or self.big.is_big(room)
        data = answer(snap, big, room, command.limit, command.after, request_id)
        if budget is not None:
            self.history_budget.charge_answer(budget.client, budget.client_history, len(data))
        conn.send(data)

    # Helpers

    def _target_room(
        self, conn: Member, room: str | None, request_id: protocol.RequestId = None
    ) -> str:
        if room is None:
            current = self.rooms.current_room(conn)
            if current is None:
                raise ProtocolError(ErrorCode.NOT_JOINED, "join a room first", None, request_id)
            return current
        if self.rooms.username(conn, room) is None:
            reason = f"not a member of room {room!r}"
            raise ProtocolError(ErrorCode.NOT_JOINED, reason, room, request_id)
        return room

    def _drop_catch_up(self, conn: Member, room: str) -> None:
        holders = self._catch_ups.get(room)
        if holders is not None:
            holders.pop(conn, None)
            if not holders:
                del self._catch_ups[room]

    def _announce_leave(self, room: str, conn: Member, username: str) -> None:
        assert self.broker is not None
        self._published["user_left"].inc()
        event = protocol.user_left(room, username, conn.user_id)
        cause = cause_of(conn.client_key)
        announce = envelope.pack(time.time(), event, conn.id, cause=cause)
        keep = self._may_keep_silent_epoch(conn, room)
        self.broker.leave(room, conn.id, announce, conn.user_id or None, keep_silent_epoch=keep)

    def _may_keep_silent_epoch(self, conn: Member, room: str) -> bool:
        """Whether this leave, if it empties a room that never had a message, keeps the room's
        epoch for a minute (broker.KEPT_SILENT_EPOCH_SECONDS), so that the member rejoining
        with ``since`` is not told its history was lost. Each keep takes a token of the
        client's (a token's user, an open-mode address) bucket of kept epochs, at its join rate
        over all nodes; past it the room is forgotten at once, as before. A close spends nothing
        of the join bucket, so without it reconnecting into fresh room names (100 handshakes a
        second per address, 16 rooms each) would leave 1,600 rooms' keys a second behind
        (docs/security.md).

        A leave that cannot empty a silent room spends nothing: other members of the room are
        still here, or the room had a message (its offsets live a day anyway). Spending on every
        leave, a user that closed tabs in busy rooms used up its budget, and its own silent room,
        left after them, was forgotten (its rejoin told ``epoch_changed``)."""
        if self.rooms.has_room(room) or self._latest.get(room, 0):
            return False
        budget = conn.budget
        if budget is None:
            return True
        client = budget.client
        bucket = self._kept_epochs.acquire(client)
        try:
            if not bucket.allow():
                return False
            self._charge_shared(client, "keep", bucket, debt=bucket.burst)
            return True
        finally:
            self._kept_epochs.release(client)

    def _bucket(self, conn: Member, kind: str) -> RateLimiter:
        """The connection's own message or typing bucket, made on first use."""
        if kind == "message":
            bucket = conn.message_rate
            if bucket is None:
                bucket = conn.message_rate = RateLimiter(*self._message_rate)
        else:
            bucket = conn.typing_rate
            if bucket is None:
                bucket = conn.typing_rate = RateLimiter(*self._typing_rate)
        return bucket

    def _rate_limited(
        self, conn: Member, kind: str, room: str, request_id: protocol.RequestId = None
    ) -> None:
        bucket = self._bucket(conn, kind)
        if bucket.flooding:
            self.metrics.frames_rejected.labels(ErrorCode.FLOOD).inc()
            conn.fail(CloseCode.POLICY_VIOLATION, f"flood: too many {kind} frames")
            return
        reason = f"too many {kind} frames; slow down"
        self._reject(conn, ErrorCode.RATE_LIMITED, reason, room, request_id)

    def _unsubscribe(self, room: str) -> None:
        assert self.broker is not None
        self._latest.pop(room, None)
        self.big.forget(room)
        timer = self._notice_timers.pop(room, None)
        if timer is not None:
            timer.cancel()
        if not self.streams.has_room(room):  # event streams still listen to it
            self.broker.unsubscribe(room)
        self.metrics.rooms_local.set(self.rooms.room_count)

    def _reject(
        self,
        conn: Member,
        code: str,
        reason: str,
        room: str | None = None,
        request_id: protocol.RequestId = None,
        retry_after: float | None = None,
    ) -> None:
        self.metrics.frames_rejected.labels(code).inc()
        conn.send(protocol.error(code, reason, room, request_id, retry_after))


def _close_reason(reason: str) -> str:
    """A close frame's reason holds at most 123 bytes of UTF-8."""
    data = reason.encode()[:123]
    return data.decode(errors="ignore")


def _log_resync(task: asyncio.Future[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is None:
        log.info("presence re-registered")
    else:
        log.warning("presence re-registration failed", extra={"error": str(error)})


class FailureReporter:
    """Tells a sender that the broker could not take its event (never dropped silently)."""

    __slots__ = ("_answered", "_conn", "_kind", "_node", "_request_id", "_room")

    def __init__(
        self,
        node: Node,
        conn: Member,
        kind: str,
        room: str,
        request_id: protocol.RequestId = None,
        answered: Callable[[], None] | None = None,
    ) -> None:
        self._node, self._conn, self._kind, self._room = node, conn, kind, room
        self._request_id = request_id
        self._answered = answered  # told once the sender's answer is queued

    def __call__(self, error: BrokerUnavailable) -> None:
        try:
            self._tell(error)
        finally:
            if self._answered is not None:
                self._answered()

    def _tell(self, error: BrokerUnavailable) -> None:
        if isinstance(error, RoomRateLimited):
            # Not a failure: the room's bucket over every node refused it (see the broker).
            reason = (
                f"room {self._room!r} is receiving too many messages; "
                f"try again in {error.retry_after:.2f} s"
            )
            self._node._reject(
                self._conn, ErrorCode.RATE_LIMITED, reason, self._room, self._request_id
            )
            return
        self._node.metrics.publish_failures.inc()
        if isinstance(error, Unconfirmed):
            code, reason = ErrorCode.UNCONFIRMED, f"{self._kind} may or may not have been sent"
        else:
            code, reason = ErrorCode.UNAVAILABLE, f"{self._kind} not delivered: broker unavailable"
        self._node._reject(self._conn, code, reason, self._room, self._request_id)


class Acknowledger:
    """Tells the sender of a message with an ``id`` its offset once the broker published it."""

    __slots__ = ("_answered", "_conn", "_made", "_request_id", "_room")

    def __init__(
        self,
        conn: Member,
        room: str,
        request_id: protocol.RequestId,
        answered: Callable[[], None],
        made: Callable[[Member], None],
    ) -> None:
        self._conn, self._room, self._request_id = conn, room, request_id
        self._answered = answered
        self._made = made  # told when the message was its room's first

    def __call__(self, epoch: str, offset: int) -> None:
        if self._request_id is not None:
            self._conn.send(protocol.ack(self._room, self._request_id, epoch, offset))
        if offset == 1:
            self._made(self._conn)
        self._answered()
