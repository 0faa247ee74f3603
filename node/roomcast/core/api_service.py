"""What each HTTP API request does: credentials, limits, then the node and its broker.

Credentials, when the node has any configured: an API key (``ROOMCAST_API_KEYS``; a backend
service, which names the author of what it posts) or a user token (the WebSocket tokens; the
token names the author and its ``rooms`` claim applies). Either comes as ``Authorization:
Bearer …``, ``X-API-Key`` or ``?token=``. With neither configured the API is open, like the
WebSocket endpoint in development mode.
"""

from __future__ import annotations

import functools
import hmac
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from roomcast.broker import Broker, BrokerUnavailable, RoomRateLimited, Unconfirmed
from roomcast.core.address_admission import AddressAdmission
from roomcast.core.addresses import limit_key
from roomcast.core.auth import AccessPolicy, AuthError, Identity, token_from_request
from roomcast.core.history_budget import HistoryBudget
from roomcast.core.history_pages import complete, first_page, pages_after
from roomcast.core.presence_pages import PresencePages
from roomcast.core.presence_pages import answer as presence_answer
from roomcast.core.ratelimit import MessageRefusal, RateLimiter
from roomcast.core.server_api import ServerApi
from roomcast.core.user_ids import UserIds
from roomcast.runtime.parse_clock import parse_clock
from roomcast.wire import api, control, envelope, protocol, sse
from roomcast.wire.api import ApiError, Endpoint, Route
from roomcast.wire.codes import ErrorCode
from roomcast.wire.openapi import document

if TYPE_CHECKING:
    from roomcast.runtime.config import Settings
    from roomcast.runtime.metrics import Metrics

# Rate-limit buckets kept for the most recent callers; older ones are forgotten (and refilled).
MAX_BUCKETS: Final = 10_000


@dataclass(frozen=True, slots=True)
class ApiRequest:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    client_address: str


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class StreamedReply:
    """A 200 answer larger than a page, written in ``pieces`` as the client drains (chunked):
    each next piece is read from Redis only then. A piece that cannot be read (history moved
    on) raises, and the answer is cut short (the client sees an incomplete body)."""

    pieces: AsyncIterator[bytes]
    content_type: str = "application/json"


class StreamChurn(Protocol):
    """A client's join budget over all nodes, as event streams spend it (core.node.Node)."""

    def admit_stream(self, client: str) -> float | None:
        """None when ``client`` may open a stream, else the seconds until it may."""
        ...

    def stream_left(self, client: str) -> None:
        """A stream of ``client`` ended by its client: spent as a leave is."""
        ...


@dataclass(frozen=True, slots=True)
class OpenStream:
    """Answer with an event stream of ``room``, resuming after ``since`` when given."""

    room: str
    since: int | None
    epoch: str | None
    # Whose token opened it (None: an API key or an open node): the server API's orders about
    # that user end it, and it ends when the token expires, as a WebSocket connection does.
    subject: str | None = None
    expires: float | None = None
    # The client owes its history budget: resumes without reading what it missed, told
    # `overloaded` (``since`` is then None).
    overloaded: bool = False
    # The client whose join budget the stream's end spends (None: an API key's).
    client: str | None = None


@dataclass(frozen=True, slots=True)
class Caller:
    key: str  # rate-limit bucket
    identity: Identity | None  # a user token's identity; None for API keys and open mode


class ApiService:
    def __init__(
        self,
        broker: Broker,
        settings: Settings,
        metrics: Metrics,
        policy: AccessPolicy,
        presence: PresencePages | None = None,
        history_budget: HistoryBudget | None = None,
        client_messages: Callable[[str, int], int | MessageRefusal] | None = None,
        room_made: Callable[[str], None] | None = None,
        user_ids: UserIds | None = None,
        stream_refusal: Callable[[str], str | None] | None = None,
        stream_churn: StreamChurn | None = None,
        stream_setups: Callable[[], int | None] | None = None,
    ) -> None:
        self._parse_clock = parse_clock()
        self._broker = broker
        # The node's setups (WebSocket handshakes and event streams together, net.admission):
        # None when a stream may start now, else the seconds for Retry-After.
        self._stream_setups = stream_setups
        # Opening and ending streams spends the client's join budget over all nodes, as
        # joining and leaving does (Node.admit_stream, Node.stream_left).
        self._stream_churn = stream_churn
        # Why the node may not open a stream of a room (None: it may): its room cap
        # (StreamHub.refusal_of).
        self._stream_refusal = stream_refusal
        # The user_id of a message a user token posts (core.user_ids), as over its WebSockets.
        self._user_ids = user_ids
        # Whether a client (its bucket key) may post one more message of so many characters,
        # and what it must leave of the room's bucket to the others (Node.admit_message).
        self._client_messages = client_messages
        # Told when a client's post was its room's first (Node.room_made): what it leaves.
        self._room_made = room_made
        # Shared with the node's WebSockets: bytes of history answers per client.
        self._history_budget = history_budget
        # Shared with the node's WebSocket presence when given: one snapshot per big room.
        self._presence = presence or PresencePages(
            broker.presence,
            time.monotonic,
            settings.big_room_interval,
            settings.big_room_members,
        )
        self._settings = settings
        self._metrics = metrics
        self._verifier = policy.verifier
        self._origins = policy.origins
        self._api_keys = tuple(key.encode() for key in settings.api_keys)
        self._buckets: OrderedDict[str, RateLimiter] = OrderedDict()
        # Before the caller is known: bearer-token checks per address (core.address_admission).
        self._token_checks = AddressAdmission(
            settings.admission_per_address_rate_per_second, settings.admission_per_address_burst
        )
        self._server_api = ServerApi(broker, metrics)

    @property
    def closed_api(self) -> bool:
        return bool(self._api_keys) or self._verifier is not None

    async def handle(self, request: ApiRequest) -> Reply | StreamedReply | OpenStream:
        route = api.route(request.method, request.target)
        if route.endpoint is Endpoint.OPENAPI:
            # Public, so asked before any credential: the address's API rate, like an open
            # node's caller (four pipelined connections of one address got 1,000 documents,
            # 35 MB, serialized afresh each time, in 0.6 s).
            self._limit(Caller(f"ip:{limit_key(request.client_address)}", None))
            return Reply(200, _openapi_body())
        if not self._origins.allows(request.headers.get("origin")):
            raise ApiError(403, ErrorCode.ORIGIN, "origin not allowed")
        caller = self._authenticate(request)
        self._limit(caller)
        if route.endpoint in api.ADMIN_ENDPOINTS:
            return await self._admin(route, caller, request)
        room = route.room
        assert room is not None
        if caller.identity is not None and not caller.identity.may_join(room):
            raise ApiError(403, ErrorCode.FORBIDDEN, f"your token does not allow {room!r}")
        pair = control.direct_room_members(room)
        if caller.identity is not None and pair is not None and caller.identity.subject not in pair:
            # As for a join: a direct room is its two users' alone, whatever `rooms` matched.
            raise ApiError(403, ErrorCode.FORBIDDEN, f"{room!r} is a direct room of others")
        if route.endpoint is Endpoint.EVENTS:
            # Before the ban check's read: a stream refused for its churn costs Redis nothing.
            self._admit_stream(_stream_client(caller))
        if caller.identity is not None:
            await self._refuse_if_banned(room, caller.identity.subject)
        if route.endpoint is Endpoint.EVENTS:
            return self._open_stream(route, request, caller)
        if not self._broker.serves(room):
            raise ApiError(503, ErrorCode.UNAVAILABLE, "the broker is unavailable")
        try:
            if route.endpoint is Endpoint.POST_MESSAGE:
                return await self._post(room, caller, request)
            if route.endpoint is Endpoint.PRESENCE:
                limit, after = api.presence_query(route)
                return await self._presence_reply(room, limit, after, caller)
            limit = api.history_limit(route, self._settings.history_size)
            return await self._history(room, limit, caller)
        except Unconfirmed as exc:
            # 504, as a gateway whose upstream did not answer: the message may have been sent.
            raise ApiError(504, ErrorCode.UNCONFIRMED, str(exc)) from None
        except BrokerUnavailable as exc:
            reason = f"broker unavailable: {exc}"
            raise ApiError(503, ErrorCode.UNAVAILABLE, reason) from None

    async def _admin(self, route: Route, caller: Caller, request: ApiRequest) -> Reply:
        """The server API: API keys only (or an open node in development)."""
        if caller.identity is not None:
            raise ApiError(
                403, ErrorCode.FORBIDDEN, "the server API takes an API key, not a user token"
            )
        # Some rooms servable is enough: each order answers for its own rooms (a broadcast per
        # room), so one Redis Cluster shard down does not refuse every order.
        if not self._broker.serving:
            raise ApiError(503, ErrorCode.UNAVAILABLE, "the broker is unavailable")
        try:
            answer = await self._server_api.handle(
                route, request.headers.get("content-type"), request.body
            )
        except BrokerUnavailable as exc:
            raise ApiError(503, ErrorCode.UNAVAILABLE, f"broker unavailable: {exc}") from None
        body = b"" if answer.value is None else api.json_body(answer.value)
        return Reply(answer.status, body)

    async def _history(self, room: str, limit: int, caller: Caller) -> Reply | StreamedReply:
        budget = self._history_budget
        if budget is None or caller.key.startswith("key:"):  # backends: the API rate only
            return await self._read_history(room, limit)
        bucket = budget.acquire(caller.key)
        try:
            reserved = await budget.reserve(bucket, room, caller.key)
            if reserved is None:
                raise ApiError(
                    429,
                    ErrorCode.RATE_LIMITED,
                    "too much history read by your requests and connections together",
                    (("Retry-After", str(max(1, math.ceil(bucket.seconds_until_ready())))),),
                )
            try:
                reply = await self._read_history(room, limit)
            except BaseException:
                budget.cancel(bucket, room, reserved, caller.key)
                raise
            # A streamed answer's size is not counted (see _read_history): larger than a page.
            used = len(reply.body) if isinstance(reply, Reply) else None
            whole = limit >= self._settings.history_size
            budget.settle(caller.key, bucket, room, reserved, used, whole=whole)
            return reply
        finally:
            budget.release(caller.key)

    async def _presence_reply(
        self, room: str, limit: int | None, after: str | None, caller: Caller
    ) -> Reply:
        """Charged to the caller's history budget, as over a WebSocket (API keys: the API rate
        only): a request answered with up to a whole member list."""
        budget = self._history_budget
        pages = self._presence
        if budget is None or caller.key.startswith("key:"):
            snap = await pages.snapshot(room)
            return Reply(200, presence_answer(snap, pages.is_big(snap), room, limit, after))
        bucket = budget.acquire(caller.key)
        try:
            if not bucket.ready():
                raise ApiError(
                    429,
                    ErrorCode.RATE_LIMITED,
                    "too much presence and history read by your requests and connections together",
                    (("Retry-After", str(max(1, math.ceil(bucket.seconds_until_ready())))),),
                )
            snap = await pages.snapshot(room)
            body = presence_answer(snap, pages.is_big(snap), room, limit, after)
            budget.charge_answer(caller.key, bucket, len(body))
            return Reply(200, body)
        finally:
            budget.release(caller.key)

    async def _read_history(self, room: str, limit: int) -> Reply | StreamedReply:
        broker, size = self._broker, self._settings.page_bytes
        # Chunked (or delimited by the close): its length is never announced, so not counted.
        page = await first_page(broker, room, limit, size, total=False)
        if complete(page):
            return Reply(200, protocol.history(room, page.epoch, page.offset, page.messages))
        head, tail = protocol.history_parts(room, page.epoch, page.offset)
        after = page.after + len(page.messages)

        async def pieces() -> AsyncIterator[bytes]:
            yield head + b",".join(page.messages)
            async for messages in pages_after(broker, room, page.epoch, after, page.offset, size):
                yield b"," + b",".join(messages)
            yield tail

        return StreamedReply(pieces())

    async def _post(self, room: str, caller: Caller, request: ApiRequest) -> Reply:
        try:
            posted = api.parse_posted_message(
                request.headers.get("content-type"), request.body, self._parse_clock
            )
        except api.CostlyBody:
            self._charge_costly_body(caller)
            raise
        if caller.identity is not None:
            username = caller.identity.name  # a user token names its author
        elif posted.username is None:
            raise ApiError(400, ErrorCode.INVALID_USERNAME, "'username' is required")
        else:
            username = posted.username
            # Open mode: a ban names the username (as for joins), so it stops posts in its name.
            await self._refuse_if_banned(room, username)
        admit = self._client_messages
        # API keys (the backend) keep the API rate only, and take the room's bucket whole.
        reserve: int | MessageRefusal = 0
        if admit is not None and not caller.key.startswith("key:"):
            reserve = admit(caller.key, len(posted.text))
        if isinstance(reserve, MessageRefusal):
            # The client's message and history-write buckets over all nodes, shared with its
            # WebSockets: the API rate alone is per node (3 nodes through nginx let one address
            # post 297 in 3 s), and a post needs no join (a room of its own each time).
            retry_after = str(max(1, math.ceil(reserve.retry_after)))
            raise ApiError(
                429, ErrorCode.RATE_LIMITED, reserve.reason, (("Retry-After", retry_after),)
            )
        now = time.time()
        user_id = None
        if caller.identity is not None and self._user_ids is not None:
            user_id = self._user_ids.of_subject(caller.identity.subject)
        prefix = protocol.chat_message_prefix(
            room, username, posted.text, int(now * 1000), user_id=user_id
        )
        self._metrics.messages_published.labels("message").inc()
        try:
            epoch, offset = await self._broker.post_message(
                room, envelope.head(now), prefix, reserve
            )
        except RoomRateLimited as exc:
            raise ApiError(  # counted, like every answer, in roomcast_api_requests_total
                429,
                ErrorCode.RATE_LIMITED,
                f"room {room!r} is receiving too many messages; slow down",
                (("Retry-After", str(max(1, math.ceil(exc.retry_after)))),),
            ) from None
        if offset == 1 and self._room_made is not None and not caller.key.startswith("key:"):
            self._room_made(caller.key)  # the post made its room: what that leaves for a day
        body = api.json_body({"room": room, "epoch": epoch, "offset": offset})
        location = f"/api/rooms/{room}/history"
        return Reply(201, body, (("Location", location),))

    async def _refuse_if_banned(self, room: str, user: str) -> None:
        """A ban refuses the banned user's joins over WebSocket; over HTTP it refuses what the
        user's own token (or, open, name) would do in the room: post, read, stream. Checked when
        the request arrives: a ban ordered while a post is on its way does not stop that post,
        as it does not stop a message already sent over WebSocket."""
        if not self._broker.serves(room):
            raise ApiError(503, ErrorCode.UNAVAILABLE, "the broker is unavailable")
        try:
            ban = await self._broker.ban_of(room, user)
        except BrokerUnavailable as exc:
            raise ApiError(503, ErrorCode.UNAVAILABLE, f"broker unavailable: {exc}") from None
        if ban is not None:
            raise ApiError(
                403, ErrorCode.BANNED, f"banned from {room!r} until {ban.until_ms} ms: {ban.reason}"
            )

    def _open_stream(self, route: Route, request: ApiRequest, caller: Caller) -> OpenStream:
        assert route.room is not None
        identity = caller.identity
        # EventSource resends the last id as a header; curl users may pass ?since= instead.
        raw = request.headers.get("last-event-id") or route.query_value("since")
        resume = sse.parse_last_event_id(raw)
        if raw is not None and resume is None:
            raise ApiError(
                400, ErrorCode.INVALID_SINCE, "Last-Event-ID must be <epoch>:<offset> or an offset"
            )
        since, id_epoch = resume if resume is not None else (None, None)
        epoch = route.query_value("epoch")
        if epoch is not None and not 1 <= len(epoch) <= sse.MAX_EPOCH_CHARS:
            raise ApiError(400, ErrorCode.INVALID_SINCE, "epoch must be 1-64 characters")
        if id_epoch is not None and epoch is not None and id_epoch != epoch:
            raise ApiError(400, ErrorCode.INVALID_SINCE, "Last-Event-ID and ?epoch= disagree")
        epoch = epoch if epoch is not None else id_epoch
        if not self._broker.serves(route.room):
            raise ApiError(503, ErrorCode.UNAVAILABLE, "the broker is unavailable")
        client = _stream_client(caller)
        refusal = None if self._stream_refusal is None else self._stream_refusal(route.room)
        if refusal is not None:
            # Refused as a WebSocket join of a new room is, before the stream's head and before
            # its resume is charged: nginx then tries the next node (503). Nothing awaits
            # between here and the stream taking its place (StreamHub.open).
            raise ApiError(503, ErrorCode.TOO_MANY_ROOMS, refusal)
        self._admit_setup()
        overloaded = since is not None and not self._charge_resume(route.room, caller)
        if overloaded:
            since = None
        if identity is None:
            return OpenStream(route.room, since, epoch, overloaded=overloaded, client=client)
        return OpenStream(
            route.room, since, epoch, identity.subject, identity.expires, overloaded, client
        )

    def _admit_stream(self, client: str | None) -> None:
        """Refuse (429) a stream its client may not open now: each subscribes its node to the
        room as a join does, and one address opening and closing streams of fresh rooms
        through three nodes made 1,024 SUBSCRIBE and UNSUBSCRIBE in 3 s (red team 15). API
        keys have the API rate only."""
        churn = self._stream_churn
        if churn is None or client is None:
            return
        wait = churn.admit_stream(client)
        if wait is not None:
            raise ApiError(
                429,
                ErrorCode.RATE_LIMITED,
                "too many event streams opened and closed (or rooms joined and left) by you; "
                "slow down",
                (("Retry-After", str(max(1, math.ceil(wait)))),),
            )

    def _admit_setup(self) -> None:
        """Refuse (503, which nginx passes to the next node) a stream the node may not set up
        now: a stream's open (a subscription, a history read, perhaps a resume) costs the node
        as much as a WebSocket handshake and join, and a node that died sends its streams to
        the others at once, as it does its WebSockets. Asked after the client's own limits, so
        that one client's flood does not take the node's tokens."""
        if self._stream_setups is None:
            return
        retry_after = self._stream_setups()
        if retry_after is not None:
            raise ApiError(
                503,
                ErrorCode.UNAVAILABLE,
                f"node busy: too many new connections and streams; retry after {retry_after} s",
                (("Retry-After", str(retry_after)),),
            )

    def stream_left(self, client: str) -> None:
        """A stream ``client`` opened ended by its client's going (not by the node)."""
        if self._stream_churn is not None:
            self._stream_churn.stream_left(client)

    def _charge_resume(self, room: str, caller: Caller) -> bool:
        """Whether the client may have a resume read from history: charged, like a join with
        `since`, the room's answer size (a whole history for a room not asked yet; what is
        missed is not counted as it is sent). API keys have the API rate only."""
        budget = self._history_budget
        if budget is None or caller.key.startswith("key:"):
            return True
        bucket = budget.acquire(caller.key)
        try:
            reserved = budget.reserve_resume(bucket, room)
            if reserved is None:
                return False
            budget.settle(caller.key, bucket, room, reserved, None, remember=False)
            return True
        finally:
            budget.release(caller.key)

    def _authenticate(self, request: ApiRequest) -> Caller:
        credential = _credential(request)
        if not self.closed_api:
            return Caller(f"ip:{limit_key(request.client_address)}", None)
        if credential is None:
            raise ApiError(
                401,
                ErrorCode.TOKEN_MISSING,
                "send an API key or a token (Authorization: Bearer …)",
                (("WWW-Authenticate", 'Bearer realm="roomcast"'),),
            )
        encoded = credential.encode()
        for index, key in enumerate(self._api_keys):
            if hmac.compare_digest(encoded, key):
                return Caller(f"key:{index}", None)
        if self._verifier is None:
            raise ApiError(401, ErrorCode.API_KEY_INVALID, "unknown API key")
        address = limit_key(request.client_address)
        retry_after = self._token_checks.admit(address)
        if retry_after is not None:
            raise ApiError(
                429,
                ErrorCode.RATE_LIMITED,
                "too many token checks from your address; slow down",
                (("Retry-After", str(retry_after)),),
            )
        try:
            identity = self._verifier.verify(credential)
        except AuthError as exc:
            if exc.code == ErrorCode.TOKEN_SIGNATURE:
                self._token_checks.forged(address)
            self._metrics.auth_failures.labels(exc.code).inc()
            raise ApiError(exc.status, exc.code, exc.reason) from None
        return Caller(f"sub:{identity.subject}", identity)

    def _charge_costly_body(self, caller: Caller) -> None:
        """A body of many JSON values (60 KB of empty arrays: ~2.5 ms to parse, twice a plain
        post's whole cost) leaves its caller owing a whole API burst, as such a frame does a
        WebSocket's received bytes (Node._charge_costly_frame): its requests are refused 429
        before any parse until the debt is paid back, one such body a burst's refill (2 s at
        the defaults), not 20 a second. Three addresses' bursts of them (120 posts) cost a node
        0.45 s of CPU, twice as many plain posts; now 0.19 s, 117 of them refused 429
        (tests/adversarial/test_redteam17_costly_bodies.py)."""
        bucket = self._buckets.get(caller.key)
        if bucket is not None:
            burst = self._settings.api_rate_burst
            bucket.spend(debt=burst, cost=2 * burst)

    def _limit(self, caller: Caller) -> None:
        bucket = self._buckets.get(caller.key)
        if bucket is None:
            bucket = self._buckets[caller.key] = RateLimiter(
                self._settings.api_rate_per_second, self._settings.api_rate_burst
            )
            if len(self._buckets) > MAX_BUCKETS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(caller.key)
        if not bucket.allow():
            retry_after = max(1, round(1 / self._settings.api_rate_per_second))
            raise ApiError(
                429,
                ErrorCode.RATE_LIMITED,
                "too many requests; slow down",
                (("Retry-After", str(retry_after)),),
            )


@functools.cache
def _openapi_body() -> bytes:
    return api.json_body(document())


def _stream_client(caller: Caller) -> str | None:
    """Whose join budget a stream spends: None for an API key's (backends: the API rate only)."""
    return None if caller.key.startswith("key:") else caller.key


def _credential(request: ApiRequest) -> str | None:
    authorization = request.headers.get("authorization")
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    return token_from_request(request.target, ())
