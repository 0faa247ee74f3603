"""The server API (issue 16): what the application's backend, with an API key, may order.

Orders about connections (disconnect, remove, ban) go to every node on the broker's control
channel (:mod:`roomcast.wire.control`) and are answered once this node published them; each node
then acts on its own connections (:meth:`roomcast.core.node.Node.on_control`). Orders about a
room's data (delete, clear, ban records) are single Redis scripts, atomic with the room's offsets.
Credentials and rate limits are checked before (:mod:`roomcast.core.api_service`).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from roomcast.broker import (
    Broker,
    BrokerUnavailable,
    NotInHistory,
    RoomRateLimited,
    Unconfirmed,
)
from roomcast.wire import api, control, envelope, protocol
from roomcast.wire.api import ApiError, Endpoint, Route
from roomcast.wire.codes import ErrorCode

if TYPE_CHECKING:
    from roomcast.runtime.metrics import Metrics


class Answer:
    """Status and JSON value (None: no body, 204)."""

    __slots__ = ("status", "value")

    def __init__(self, status: int, value: Any) -> None:
        self.status = status
        self.value = value


class ServerApi:
    def __init__(self, broker: Broker, metrics: Metrics) -> None:
        self._broker = broker
        self._metrics = metrics

    async def handle(self, route: Route, content_type: str | None, body: bytes) -> Answer:
        endpoint = route.endpoint
        if endpoint is Endpoint.LIST_ROOMS:
            limit, after = api.rooms_page(route)
            rooms, next_cursor = await self._broker.active_rooms(limit, after)
            listed = [
                {"room": r.room, "members": r.members, "connections": r.connections} for r in rooms
            ]
            return Answer(200, {"rooms": listed, "next_cursor": next_cursor})
        if endpoint is Endpoint.CLUSTER:
            return Answer(200, {"nodes": await self._broker.cluster_nodes()})
        if endpoint is Endpoint.BROADCAST:
            return await self._broadcast(api.parse_broadcast(content_type, body))
        if endpoint is Endpoint.DISCONNECT:
            assert route.user is not None
            reason, reconnect = api.parse_disconnect(content_type, body)
            told = await self._order(control.Disconnect(route.user, reason, reconnect))
            return Answer(202, {"user": route.user, "nodes_told": told})
        room = route.room
        assert room is not None
        if endpoint is Endpoint.DELETE_MESSAGE:
            assert route.offset is not None
            try:
                epoch = await self._broker.delete_message(room, route.offset)
            except NotInHistory as exc:
                raise ApiError(404, ErrorCode.NOT_IN_HISTORY, str(exc)) from None
            return Answer(200, {"room": room, "epoch": epoch, "offset": route.offset})
        if endpoint is Endpoint.CLEAR_HISTORY:
            epoch, latest = await self._broker.clear_history(room)
            return Answer(200, {"room": room, "epoch": epoch, "up_to_offset": latest})
        if endpoint is Endpoint.LIST_BANS:
            bans = await self._broker.bans(room)
            listed = [{"user": b.user, "until": b.until_ms, "reason": b.reason} for b in bans]
            return Answer(200, {"room": room, "bans": listed})
        user = route.user
        assert user is not None
        if endpoint is Endpoint.UNBAN:
            await self._broker.unban(room, user)
            return Answer(204, None)
        if endpoint is Endpoint.BAN:
            seconds, reason = api.parse_ban(content_type, body)
            # Recorded first: a join racing the order below is refused by Redis itself.
            until = await self._broker.ban(room, user, seconds, reason)
            told = await self._order(control.Remove(room, user, reason, until))
            return Answer(200, {"room": room, "user": user, "until": until, "nodes_told": told})
        assert endpoint is Endpoint.REMOVE_MEMBER
        reason = api.parse_remove(content_type, body)
        told = await self._order(control.Remove(room, user, reason))
        return Answer(202, {"room": room, "user": user, "nodes_told": told})

    async def _order(self, order: control.ControlEvent) -> int:
        return await self._broker.publish_control(control.encode(order))

    async def _broadcast(self, broadcast: api.Broadcast) -> Answer:
        posted = broadcast.message
        if posted.username is None:
            raise ApiError(400, ErrorCode.INVALID_USERNAME, "'username' is required")
        username = posted.username

        async def one(room: str) -> dict[str, Any]:
            now = time.time()
            prefix = protocol.chat_message_prefix(room, username, posted.text, int(now * 1000))
            try:
                epoch, offset = await self._broker.post_message(room, envelope.head(now), prefix)
            except BrokerUnavailable as exc:
                # As POST /api/rooms/{room}/messages would answer, room by room.
                code = ErrorCode.UNAVAILABLE
                if isinstance(exc, RoomRateLimited):
                    code = ErrorCode.RATE_LIMITED
                elif isinstance(exc, Unconfirmed):
                    code = ErrorCode.UNCONFIRMED  # it may have been published
                return {"room": room, "code": code, "reason": str(exc)}
            self._metrics.messages_published.labels("message").inc()
            return {"room": room, "epoch": epoch, "offset": offset}

        # Each room is its own script (its own slot on Redis Cluster): all sent at once.
        results = await asyncio.gather(*(one(room) for room in broadcast.rooms))
        return Answer(201, {"results": results})
