"""The node's chat logic: commands from clients in, room events out through the broker.

Every room event, including those of local senders, goes through the broker and comes back to be
fanned out, so all members of a room, on every node, see its events in the broker's one order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable

from roomcast import envelope, protocol
from roomcast.broker import Broker, BrokerUnavailable
from roomcast.framing import text_frame
from roomcast.metrics import Metrics
from roomcast.protocol import ErrorCode, Join, Leave, Message, ProtocolError, Typing
from roomcast.rooms import RoomRegistry, TooManyRoomsError
from roomcast.transport import Connection, Outbox

log = logging.getLogger("roomcast.node")


class Node:
    def __init__(
        self,
        node_id: str,
        max_rooms: int,
        max_frame_bytes: int,
        metrics: Metrics,
    ) -> None:
        self.node_id = node_id
        self._max_rooms = max_rooms
        self._max_frame_bytes = max_frame_bytes
        self.metrics = metrics
        self.rooms: RoomRegistry[Connection] = RoomRegistry(max_rooms)
        self.broker: Broker | None = None
        self.outbox: Outbox | None = None
        self._received = {
            kind: metrics.frames_received.labels(kind) for kind in protocol.COMMAND_TYPES
        }
        self._published = {
            kind: metrics.messages_published.labels(kind)
            for kind in ("message", "typing", "user_joined", "user_left")
        }

    def attach(self, broker: Broker, outbox: Outbox) -> None:
        self.broker = broker
        self.outbox = outbox

    # Transport callbacks

    def on_open(self, conn: Connection) -> None:
        conn.send(protocol.welcome(self.node_id, conn.id, self._max_rooms, self._max_frame_bytes))

    def on_text(self, conn: Connection, text: str) -> Awaitable[None] | None:
        try:
            command = protocol.parse_command(text)
            if isinstance(command, Message):
                self._received["message"].inc()
                self._message(conn, command)
            elif isinstance(command, Typing):
                self._received["typing"].inc()
                self._typing(conn, command)
            elif isinstance(command, Join):
                self._received["join"].inc()
                return self._join(conn, command)
            else:
                self._received["leave"].inc()
                self._leave(conn, command)
        except ProtocolError as exc:
            self._reject(conn, exc.code, exc.reason, exc.room)
        return None

    def on_close(self, conn: Connection) -> None:
        for room, username, last_local in self.rooms.leave_all(conn):
            self._publish(room, "user_left", protocol.user_left(room, username), conn.id)
            if last_local:
                self._unsubscribe(room)

    def on_rejected(self, conn: Connection, code: str) -> None:
        self.metrics.frames_rejected.labels(code).inc()

    # Broker callback: the hot path of fan-out.

    def on_broker_message(self, room: str, payload: bytes) -> None:
        members = self.rooms.members(room)
        if not members:
            return
        try:
            event = envelope.unpack(payload)
        except (envelope.EnvelopeError, UnicodeDecodeError):
            self.metrics.broker_bad_payloads.inc()
            return
        assert self.outbox is not None
        self.outbox.fan_out(members, event.frame, event.exclude)
        self.metrics.fanout_latency.observe(max(0.0, time.time() - event.origin_time))

    # Commands

    async def _join(self, conn: Connection, command: Join) -> None:
        room = command.room
        try:
            result = self.rooms.join(conn, room, command.username)
        except TooManyRoomsError as exc:
            self._reject(conn, ErrorCode.TOO_MANY_ROOMS, str(exc), room)
            return
        if result.first_local_member:
            self.metrics.rooms_local.set(self.rooms.room_count)
        assert self.broker is not None
        try:
            # Also for later local joiners: the first joiner's SUBSCRIBE may still be in flight,
            # and nobody may speak in the room before this node surely listens to it.
            await self.broker.subscribe(room)
        except BrokerUnavailable as exc:
            if self.rooms.leave(conn, room):
                self._unsubscribe(room)
            self._reject(conn, ErrorCode.UNAVAILABLE, f"cannot join now: {exc}", room)
            return
        if conn.closed or self.rooms.username(conn, room) is None:
            return
        conn.send(protocol.joined(room, command.username))
        if not result.already_member:
            self._publish(
                room, "user_joined", protocol.user_joined(room, command.username), conn.id
            )

    def _leave(self, conn: Connection, command: Leave) -> None:
        room = self._target_room(conn, command.room)
        username = self.rooms.username(conn, room)
        assert username is not None
        if self.rooms.leave(conn, room):
            self._unsubscribe(room)
        conn.send(protocol.left(room))
        self._publish(room, "user_left", protocol.user_left(room, username), conn.id)

    def _message(self, conn: Connection, command: Message) -> None:
        room = self._target_room(conn, command.room)
        username = self.rooms.username(conn, room)
        assert username is not None
        now = time.time()
        payload = protocol.chat_message(room, username, command.text, int(now * 1000))
        self._publish(room, "message", payload, "", conn, now)

    def _typing(self, conn: Connection, command: Typing) -> None:
        room = self._target_room(conn, command.room)
        username = self.rooms.username(conn, room)
        assert username is not None
        self._publish(room, "typing", protocol.typing(room, username), conn.id, conn)

    # Helpers

    def _target_room(self, conn: Connection, room: str | None) -> str:
        if room is None:
            current = self.rooms.current_room(conn)
            if current is None:
                raise ProtocolError(ErrorCode.NOT_JOINED, "join a room first")
            return current
        if self.rooms.username(conn, room) is None:
            raise ProtocolError(ErrorCode.NOT_JOINED, f"not a member of room {room!r}", room)
        return room

    def _publish(
        self,
        room: str,
        kind: str,
        event: bytes,
        exclude: str,
        sender: Connection | None = None,
        now: float | None = None,
    ) -> None:
        assert self.broker is not None
        payload = envelope.pack(time.time() if now is None else now, text_frame(event), exclude)
        self._published[kind].inc()
        on_failure = None
        if sender is not None:

            def on_failure() -> None:
                self.metrics.publish_failures.inc()
                self._reject(
                    sender, ErrorCode.UNAVAILABLE, f"{kind} not delivered: broker unavailable", room
                )

        self.broker.publish(room, payload, on_failure)

    def _unsubscribe(self, room: str) -> None:
        assert self.broker is not None
        self.broker.unsubscribe(room)
        self.metrics.rooms_local.set(self.rooms.room_count)

    def _reject(self, conn: Connection, code: str, reason: str, room: str | None = None) -> None:
        self.metrics.frames_rejected.labels(code).inc()
        conn.send(protocol.error(code, reason, room))
