"""HTTP/1.1 on the public port: the API and its Server-Sent Events streams (h11, no framework).

The WebSocket transport hands a connection over as soon as its request line shows an API request,
so ``/chat`` and ``/api/`` share one port (and nginx needs no second upstream). Requests on one
connection are answered in order (keep-alive); an event stream holds its connection until the
client goes, the node drains, or the client stops reading (then it is dropped, as WebSocket slow
consumers are).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Final, cast

import h11

from roomcast.broker import BrokerUnavailable
from roomcast.core.addresses import limit_key
from roomcast.core.api_service import ApiRequest, ApiService, OpenStream, Reply, StreamedReply
from roomcast.core.ratelimit import RateLimiter
from roomcast.core.streams import StreamHub
from roomcast.net.sendbuffer import SendBudget, SendBuffer, cap_kernel_send_buffer, new_send_budget
from roomcast.wire import api, sse
from roomcast.wire.api import MAX_HEAD_BYTES, ApiError
from roomcast.wire.codes import ErrorCode
from roomcast.wire.http_bodies import too_many_lines, too_many_pieces
from roomcast.wire.http_heads import MAX_HEADERS, HeadLines

if TYPE_CHECKING:
    from roomcast.core.auth import ProxyTrust
    from roomcast.net.transport import Outbox
    from roomcast.runtime.config import Settings
    from roomcast.runtime.metrics import Metrics

log = logging.getLogger("roomcast.http")

# Tell EventSource to come back quickly: a 1001-like drain sends clients to other nodes at once.
SSE_RETRY_MS: Final = 1000
_STREAM_HEADERS: Final = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-transform"),
    # nginx must pass events through as they come, not buffer them.
    (b"x-accel-buffering", b"no"),
]


class PublicHttp:
    """The API side of the public port: shared by every HTTP connection of the node."""

    def __init__(
        self,
        service: ApiService,
        hub: StreamHub,
        settings: Settings,
        metrics: Metrics,
        proxies: ProxyTrust,
        outbox: Outbox,
        loop: asyncio.AbstractEventLoop,
        send_budget: SendBudget | None = None,
    ) -> None:
        self.service = service
        # What the node holds for backed-up clients, shared with the WebSocket connections.
        self.send_budget = (
            send_budget if send_budget is not None else new_send_budget(settings, metrics)
        )
        self.hub = hub
        self.settings = settings
        self.metrics = metrics
        self.proxies = proxies
        self.outbox = outbox
        self.loop = loop
        # Charges what a refused request's client still sends to the client's receive budget,
        # shared with its WebSockets and its other refused requests (False once over it); set
        # by the WebSocket server that hands this API its sockets. Unset (this API alone), each
        # refused connection gets a budget of its own.
        self.charge_lingering: Callable[[str, int], bool] | None = None
        self.connections: set[HttpConnection] = set()
        # Connections whose request is being answered (a post may wait for Redis): a drain
        # answers each before the node goes, as it does a WebSocket's messages.
        self.serving: set[HttpConnection] = set()
        self._none_serving = asyncio.Event()
        self._none_serving.set()
        # Which node answered: for operators (and tests) looking behind the load balancer.
        self.node_header = settings.node_id.encode()
        self.draining = False
        self._ids = itertools.count(1)
        self._heartbeat: asyncio.TimerHandle | None = None
        self._requests = {
            (endpoint.value, status): metrics.api_requests.labels(endpoint.value, str(status))
            for endpoint in api.Endpoint
            for status in (200, 201)
        }

    def take_over(self, transport: asyncio.Transport, received: bytes, peer: str) -> None:
        """Serve a connection the WebSocket transport found to be an HTTP API request."""
        # Answers and streams go a page at a time, the next once the socket drained: at half a
        # page (the kernel doubles it) the kernel holds about one page of an unread answer
        # (autotuned, ~1.8 MB was measured queued per unread answer, every page of it read
        # from Redis first).
        cap_kernel_send_buffer(transport, self.settings.page_bytes // 2)
        conn = HttpConnection(self, f"http-{next(self._ids):x}", peer)
        transport.set_protocol(conn)
        conn.connection_made(transport)
        if received:
            conn.data_received(received)

    def open_sockets(self) -> int:
        return len(self.connections)

    def count(self, endpoint: str, status: int) -> None:
        counter = self._requests.get((endpoint, status))
        if counter is None:
            counter = self.metrics.api_requests.labels(endpoint, str(status))
        counter.inc()

    def start(self) -> None:
        self._heartbeat = self.loop.call_later(self.settings.sse_heartbeat, self._beat)

    def _beat(self) -> None:
        self.hub.heartbeat()
        self._heartbeat = self.loop.call_later(self.settings.sse_heartbeat, self._beat)

    def begin_serving(self, conn: HttpConnection) -> None:
        self.serving.add(conn)
        self._none_serving.clear()

    def end_serving(self, conn: HttpConnection) -> None:
        self.serving.discard(conn)
        if not self.serving:
            self._none_serving.set()

    async def drain(self, wait: float) -> None:
        """End every stream (EventSource reconnects, through nginx, to another node), then
        answer every request taken before the drain: its own answer if it comes within
        ``wait``, else one saying its fate is unknown. A client talking to the node directly
        hears it from the node, not from a proxy's 504 (or from nothing, without one)."""
        self.draining = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        for conn in list(self.connections):
            conn.end()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._none_serving.wait(), wait)
        if self.serving:
            log.warning("drain: API requests given up", extra={"count": len(self.serving)})
        for conn in list(self.serving):
            conn.give_up()


class HttpConnection(asyncio.Protocol):
    def __init__(self, server: PublicHttp, connection_id: str, peer: str) -> None:
        self._server = server
        self.id = connection_id
        self.pending: list[bytes] = []
        self._peer = peer
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        # The request head's lines, counted before h11 parses them (wire.http_heads).
        self._head_lines = HeadLines()
        self._transport: asyncio.Transport | None = None
        self._send: SendBuffer | None = None
        # The answer is out but the client has not read it yet: the next request waits.
        self._awaiting_drain = False
        self._request: h11.Request | None = None
        self._body = bytearray()
        self._body_pieces = 0  # the h11 events the body came in (wire.http_bodies)
        # A chunked body's bytes and line ends on the wire so far (None: not a chunked body).
        self._chunked_wire: list[int] | None = None
        self._busy = False
        self._stream_room: str | None = None
        self._chunked = False  # the event stream's body is framed in chunks (set when it opens)
        self.subject: str | None = None  # whose token opened the stream (StreamSink)
        # The client whose join budget the stream's end spends (None: an API key's stream, or
        # one the node ended: a drain must not lock its clients' reconnects out).
        self._stream_client: str | None = None
        self._token_timer: asyncio.TimerHandle | None = None
        self._closed = False
        # Refused: the answer is out and our half closed, the client's rest read and dropped,
        # within its client's receive budget (_charge_lingering).
        self._lingering = False
        self._linger_budget: RateLimiter | None = None
        # The drain answered the request in flight: its own answer, if it comes, is dropped.
        self._given_up = False
        self._serving: tuple[str, str] | None = None  # the endpoint and method being answered
        self._idle_timer: asyncio.TimerHandle | None = None
        # A streamed answer or resume waiting for the socket to drain before its next piece.

    @property
    def closed(self) -> bool:
        return self._closed

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._send = SendBuffer(
            self._transport,
            self._server.settings.send_buffer_bytes,
            self._server.send_budget,
            limit_key(self._peer),
        )
        self._server.connections.add(self)
        # The whole request must come within the handshake timeout, as for a WebSocket.
        self._arm_timer(self._server.settings.handshake_timeout)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            # A refused request's rest is read only so that the close does not reset the answer
            # away (_linger), and only within a client's receive budget, then no more until the
            # timer (paused, not reset, which could still destroy the answer): uncharged, 4
            # refused connections made a node read 2.3 GB in the 5 s of ROOMCAST_CLOSE_TIMEOUT
            # (tests/adversarial/test_breakrt18_lingering_floods.py).
            if not self._charge_lingering(len(data)) and self._transport is not None:
                self._transport.pause_reading()
            return
        if self._stream_room is not None:
            return  # a stream's client has nothing more to say
        if not self._head_lines.feed(data):
            self._reject_early(_head_refused(self._head_lines))
            return
        if not self._chunked_body_fits(data):
            self._reject_early(_too_many_pieces())
            return
        self._h11.receive_data(data)
        self._advance()

    def eof_received(self) -> bool:
        if self._stream_room is None and not self._lingering:
            self._h11.receive_data(b"")
            self._advance()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._wake_drain_waiter()
        self.pending.clear()
        if self._send is not None:
            self._send.release()
        self._cancel_idle_timer()
        self._server.connections.discard(self)
        if self._token_timer is not None:
            self._token_timer.cancel()
            self._token_timer = None
        if self._stream_room is not None:
            self._server.hub.close(self, self._stream_room)
            if self._stream_client is not None:
                self._server.service.stream_left(self._stream_client)

    def pause_writing(self) -> None:
        if self._send is not None:
            self._send.pause()

    def resume_writing(self) -> None:
        if self._send is None:
            return
        self._send.resume()
        if self._send.drained:
            self._wake_drain_waiter()
        if self._awaiting_drain and not self._send.paused:
            self._awaiting_drain = False
            self._cancel_idle_timer()
            self._next_request()

    # Outbox entry (event streams)

    def write_pending(self) -> int:
        pending = self.pending
        count = len(pending)
        if not count:
            return 0
        self.pending = []
        if self._closed or self._send is None:
            return 0
        size = sum(map(len, pending))
        if not size:
            return 0
        if self._chunked:
            # Framed here as h11's ChunkedWriter does, the events themselves not copied: the
            # fan-out of a burst shares them among every stream (see SendBuffer.write_pieces).
            # h11 keeps no count of a chunked body's bytes, so its state stays right for the
            # EndOfMessage.
            head = b"%x\r\n" % size
            if not self._write_pieces([head, *pending, b"\r\n"], len(head) + size + 2):
                return 0
        else:
            data = pending[0] if count == 1 else b"".join(pending)
            if not self._write(self._h11.send(h11.Data(data=data))):  # HTTP/1.0: no chunks
                return 0
        return count - pending.count(sse.HEARTBEAT)

    async def drained(self) -> bool:
        """Wait until what was written left the node (below the transport's low-water mark);
        False once the connection ended, or when it did not drain within the lag timeout (a
        client that does not read: dropped)."""
        send = self._send
        if send is None or self._closed:
            return False
        await send.wait_drained(
            self._server.loop, self._server.settings.lag_timeout, self._drop_slow_consumer
        )
        return not self._closed

    def _wake_drain_waiter(self) -> None:
        if self._send is not None:
            self._send.wake()

    def end(self) -> None:
        """Finish the current stream cleanly (drain), or close an idle keep-alive connection;
        a request partly received is answered 503: it was never taken, so never published."""
        if self._stream_room is not None and not self._closed:
            self._stream_client = None  # ended by the node, not left by its client
            self.write_pending()
            self._write(self._h11.send(h11.EndOfMessage()))
            self._close()
        elif self._busy:
            return
        elif self._h11.their_state is h11.SEND_BODY or self._h11.trailing_data[0]:
            self._reject_early(ApiError(503, ErrorCode.UNAVAILABLE, "node shutting down"))
        else:
            self._close()

    def give_up(self) -> None:
        """The drain stops waiting for this request's answer, which may yet come (a post's
        script Redis ran or may still run): 504 ``unconfirmed`` for a request that may have
        changed something, 503 for a read; then the connection closes."""
        if self._serving is None or self._closed:
            return
        endpoint, method = self._serving
        self._given_up = True
        if method in ("GET", "HEAD"):
            error = ApiError(503, ErrorCode.UNAVAILABLE, "node shutting down")
        else:
            reason = "the node shut down before Redis answered: it may or may not have been done"
            error = ApiError(504, ErrorCode.UNCONFIRMED, reason)
        self._reject_early(error, endpoint)
        self._closed = True  # what the request's handler writes later goes nowhere

    # Requests

    def _advance(self) -> None:
        while not self._busy and not self._closed:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._protocol_error(exc)
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                # A body trickled in slowly must not hold the connection forever either.
                self._arm_body_timer(self._server.settings.handshake_timeout)
                self._request = event
                self._body = bytearray()
                self._body_pieces = 0
                self._chunked_wire = None
                chunked = (b"transfer-encoding", b"chunked") in event.headers
                if not self._body_fits(event, chunked):
                    return
                if chunked:
                    # What came with the head is in h11's buffer already, not parsed yet.
                    self._chunked_wire = [0, 0]
                    if not self._chunked_body_fits(self._h11.trailing_data[0]):
                        self._reject_early(_too_many_pieces())
                        return
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > self._server.settings.max_frame_bytes:
                    self._reject_early(_too_large(self._server.settings.max_frame_bytes))
                    return
                self._body_pieces += 1
                if too_many_pieces(self._body_pieces, len(self._body)):
                    self._reject_early(_too_many_pieces())
                    return
            elif isinstance(event, h11.EndOfMessage):
                self._cancel_idle_timer()
                self._dispatch()
            elif isinstance(event, h11.ConnectionClosed):
                self._close()
                return

    def _chunked_body_fits(self, data: bytes) -> bool:
        """Count a chunked body's line ends before h11 parses them (its trailer lines)."""
        wire = self._chunked_wire
        if wire is None or self._h11.their_state is not h11.SEND_BODY or not data:
            return True
        wire[0] += len(data)
        wire[1] += data.count(b"\n")
        return not too_many_lines(wire[1], wire[0])

    def _body_fits(self, request: h11.Request, chunked: bool) -> bool:
        for name, value in request.headers:
            if name != b"content-length":
                continue
            if chunked:
                # Framed two ways: h11 reads the chunks, a proxy in front may have read the
                # length, and what one takes for the body's end the other takes for a next
                # request (on a proxy's connection, with an X-Forwarded-For of the client's
                # choosing). RFC 9112 6.3: close after answering it; the shipped nginx answers
                # 400 itself (tests/adversarial/test_redteam19_request_framing.py).
                self._reject_early(_framed_twice())
                return False
            if int(value) > self._server.settings.max_frame_bytes:
                self._reject_early(_too_large(self._server.settings.max_frame_bytes))
                return False
        return True

    def _dispatch(self) -> None:
        request = self._request
        assert request is not None
        headers: dict[str, str] = {}
        for name, value in request.headers:
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        client = self._server.proxies.client_address(self._peer, headers.get("x-forwarded-for"))
        if self._send is not None:
            # A proxy's connection carries one client's requests after another.
            self._send.belongs_to(limit_key(client))
        api_request = ApiRequest(
            request.method.decode("latin-1"),
            request.target.decode("latin-1"),
            headers,
            bytes(self._body),
            client,
        )
        self._body = bytearray()
        self._busy = True
        if self._transport is not None:
            self._transport.pause_reading()
        task = asyncio.ensure_future(self._serve(api_request))
        task.add_done_callback(_log_failure)

    async def _serve(self, request: ApiRequest) -> None:
        endpoint = "unknown"
        with contextlib.suppress(ApiError):  # answered as an error by _answer
            endpoint = api.route(request.method, request.target).endpoint.value
        self._serving = (endpoint, request.method)
        self._server.begin_serving(self)
        try:
            await self._answer(endpoint, request)
        finally:
            self._serving = None
            self._server.end_serving(self)

    async def _answer(self, endpoint: str, request: ApiRequest) -> None:
        try:
            if self._server.draining:
                raise ApiError(503, ErrorCode.UNAVAILABLE, "node shutting down")
            answer = await self._server.service.handle(request)
        except ApiError as exc:
            self._reply(endpoint, Reply(exc.status, exc.body(), exc.headers), request.method)
            return
        except Exception:
            log.exception("API request failed", extra={"endpoint": endpoint})
            error = ApiError(500, ErrorCode.INTERNAL_ERROR, "internal error")
            self._reply(endpoint, Reply(500, error.body()), request.method)
            return
        if isinstance(answer, OpenStream):
            await self._stream(answer)
        elif isinstance(answer, StreamedReply):
            await self._reply_streamed(endpoint, answer, request.method)
        else:
            self._reply(endpoint, answer, request.method)

    def _reply(self, endpoint: str, reply: Reply, method: str) -> None:
        if self._given_up:
            return  # answered by the drain (and counted then); the connection is closing
        self._server.count(endpoint, reply.status)
        if self._closed:
            return
        headers = [
            *(  # 204: no body, so no content headers (RFC 9110 §8.6)
                ()
                if reply.status == 204
                else (
                    (b"content-type", reply.content_type.encode()),
                    (b"content-length", str(len(reply.body)).encode()),
                )
            ),
            (b"cache-control", b"no-store"),
            (b"x-roomcast-node", self._server.node_header),
            *((name.encode(), value.encode()) for name, value in reply.headers),
        ]
        try:
            data = self._h11.send(
                h11.Response(
                    status_code=reply.status, headers=headers, reason=_reason(reply.status)
                )
            )
            if method != "HEAD" and reply.body:
                data = (data or b"") + (self._h11.send(h11.Data(data=reply.body)) or b"")
            data = (data or b"") + (self._h11.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:
            self._close()
            return
        if not self._write(data):
            return
        self._answered()

    async def _reply_streamed(self, endpoint: str, reply: StreamedReply, method: str) -> None:
        """A 200 answer written a piece at a time, each once the socket drained (chunked, or
        delimited by the close for an HTTP/1.0 client): never built whole."""
        self._server.count(endpoint, 200)
        if self._closed:
            return
        headers = [
            (b"content-type", reply.content_type.encode()),
            (b"cache-control", b"no-store"),
            (b"x-roomcast-node", self._server.node_header),
        ]
        if not self._write(self._h11.send(h11.Response(status_code=200, headers=headers))):
            return
        if method != "HEAD":
            try:
                async for piece in reply.pieces:
                    if not self._write(self._h11.send(h11.Data(data=piece))):
                        return
                    # The next piece is read from Redis only once this one left the node.
                    if not await self.drained():
                        return
            except Exception as exc:
                # History moved on under the answer (or Redis went away): cut it short, so the
                # client sees an incomplete body rather than a wrong one.
                log.info("streamed answer cut", extra={"connection": self.id, "reason": str(exc)})
                if self._transport is not None:
                    self._transport.abort()
                self._closed = True
                return
        if not self._write(self._h11.send(h11.EndOfMessage())):
            return
        self._answered()

    def _answered(self) -> None:
        """The answer is handed over: the next request, once the client has read it."""
        if self._send is not None and self._send.paused:
            # Read no further request until this answer is on its way: a client that pipelines
            # requests and never reads the answers would otherwise pile them up here.
            self._awaiting_drain = True
            # A client that never reads it is cut off: a graceful close would wait for it.
            self._cancel_idle_timer()
            self._idle_timer = self._server.loop.call_later(
                self._server.settings.http_idle_timeout, self._drop_slow_consumer
            )
            return
        self._next_request()

    async def _stream(self, plan: OpenStream) -> None:
        self._server.count(api.Endpoint.EVENTS.value, 200)
        head = h11.Response(
            status_code=200,
            headers=[*_STREAM_HEADERS, (b"x-roomcast-node", self._server.node_header)],
            reason=b"OK",
        )
        self._write(
            (self._h11.send(head) or b"")
            + (self._h11.send(h11.Data(data=sse.retry(SSE_RETRY_MS))) or b"")
        )
        self._stream_room = plan.room
        # h11 answers an HTTP/1.1 client's body of unknown length in chunks (HTTP/1.0: until
        # the connection closes).
        version = self._h11.their_http_version
        self._chunked = version is not None and version >= b"1.1"
        self.subject = plan.subject
        self._stream_client = plan.client
        if plan.expires is not None:
            # As a WebSocket connection: the stream ends when its token does (exp + leeway).
            ends = plan.expires + self._server.settings.auth_leeway - time.time()
            self._token_timer = self._server.loop.call_later(max(0.0, ends), self._token_expired)
        if self._transport is not None:
            # Keep reading, so a client that goes away is noticed (its input is ignored).
            self._transport.resume_reading()
        try:
            await self._server.hub.open(self, plan.room, plan.since, plan.epoch, plan.overloaded)
        except BrokerUnavailable as exc:
            failure = api.json_body(
                {"type": "error", "code": ErrorCode.UNAVAILABLE, "reason": str(exc)}
            )
            self._stream_room = self._stream_client = None
            self._write(self._h11.send(h11.Data(data=sse.event(failure))))
            self._write(self._h11.send(h11.EndOfMessage()))
            self._close()

    def _token_expired(self) -> None:
        self._token_timer = None
        if self._closed or self._stream_room is None:
            return
        self._server.metrics.frames_rejected.labels(ErrorCode.TOKEN_EXPIRED).inc()
        log.info("token expired; ending event stream", extra={"connection": self.id})
        expired = {
            "type": "error",
            "code": ErrorCode.TOKEN_EXPIRED,
            "reason": "token expired; reconnect with a new one",
        }
        self.pending.append(sse.event(api.json_body(expired)))
        self.end()

    def _next_request(self) -> None:
        if self._h11.our_state is h11.MUST_CLOSE or self._h11.their_state is h11.MUST_CLOSE:
            self._close()
            return
        try:
            self._h11.start_next_cycle()
        except h11.LocalProtocolError:
            self._close()
            return
        self._busy = False
        self._head_lines.restart()
        # A head already received behind the previous request is counted from h11's buffer
        # before h11 parses it: parsed first, a 100 KB head of 25,000 headers cost the node
        # ~85 ms before its 431 (tests/adversarial/test_breakrt18_pipelined_heads.py).
        if not self._head_lines.feed(self._h11.trailing_data[0]):
            self._reject_early(_head_refused(self._head_lines))
            return
        self._arm_timer(self._server.settings.http_idle_timeout)
        if self._transport is not None and not self._closed:
            self._transport.resume_reading()
        self._advance()

    def _protocol_error(self, exc: h11.RemoteProtocolError) -> None:
        status = exc.error_status_hint
        if status == 400 and "too long" in str(exc).lower():
            status = 431
        self._reject_early(ApiError(status, ErrorCode.INVALID_REQUEST, f"malformed request: {exc}"))

    def _reject_early(self, error: ApiError, endpoint: str = "unknown") -> None:
        """Answer and close without reading the rest (bad framing, body too large, a drain)."""
        self._server.count(endpoint, error.status)
        if self._h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(error.body())).encode()),
                (b"connection", b"close"),
                (b"x-roomcast-node", self._server.node_header),
            ]
            try:
                response = h11.Response(
                    status_code=error.status, headers=headers, reason=_reason(error.status)
                )
                self._write(
                    (self._h11.send(response) or b"")
                    + (self._h11.send(h11.Data(data=error.body())) or b"")
                    + (self._h11.send(h11.EndOfMessage()) or b"")
                )
            except h11.LocalProtocolError:
                pass
        self._linger()

    def _linger(self) -> None:
        """Close after a refusal without resetting its answer away: closing a socket with
        unread input sends an RST, which can destroy the answer before the client reads it (a
        1 MB post or a 200 KB head straight to a node got no answer, 10 times of 10). The
        node's half is closed and what the client still sends is read and dropped unparsed
        until it closes too, for at most ROOMCAST_CLOSE_TIMEOUT (as a WebSocket's close)."""
        transport = self._transport
        if self._lingering or transport is None or not transport.can_write_eof():
            self._close()
            return
        if transport.is_closing():
            return
        self._lingering = True
        settings = self._server.settings
        if self._server.charge_lingering is None:
            self._linger_budget = RateLimiter(
                settings.client_receive_bytes_per_second, settings.client_receive_bytes_burst
            )
        if self._send is not None:
            self._send.flush()  # what waits for a paused socket goes before the end
        transport.write_eof()
        transport.resume_reading()
        self._arm_timer(settings.close_timeout)

    def _charge_lingering(self, size: int) -> bool:
        """Charge ``size`` bytes read while lingering; False once over the budget. The client's
        own, shared by its connections: a budget per refused connection let one address's 48
        make a node read 531 MB in 8 s, 0.18 s of its CPU, against 221 MB and 0.05 s for 48
        closed WebSockets (tests/adversarial/test_breakstop30_linger_one_address.py)."""
        charge = self._server.charge_lingering
        if charge is not None:
            return charge(f"ip:{limit_key(self._peer)}", size)
        budget = self._linger_budget
        return budget is None or budget.allow(size)

    def _drop_slow_consumer(self) -> None:
        self._wake_drain_waiter()
        # Ended by the node, not left by its client: spends nothing of the client's join
        # budget (its EventSource reconnects at once, and was refused 429 for it).
        self._stream_client = None
        self._server.metrics.slow_consumer_drops.inc()
        log.info("slow HTTP consumer dropped", extra={"connection": self.id})
        if self._send is not None:
            self._send.discard()
        if self._transport is not None:
            self._transport.abort()
        self._closed = True

    def _write(self, data: bytes | None) -> bool:
        """Send through the shared bound; False (and the connection dropped) once over it."""
        if not data:
            return not self._closed
        return self._write_pieces([data], len(data))

    def _write_pieces(self, pieces: list[bytes], size: int) -> bool:
        """:meth:`_write` of the pieces, joined only by the transport."""
        if self._send is None or self._closed:
            return not self._closed
        if self._send.write_pieces(pieces, size) and not self._send.over:
            return True
        # An event stream's client resumes from history with Last-Event-ID (EventSource does it
        # by itself); an answer's client asks again.
        self._drop_slow_consumer()
        return False

    def _close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            if self._send is not None:
                self._send.flush()  # what waits for a paused socket goes before the close
            self._transport.close()

    def _arm_timer(self, seconds: float) -> None:
        """Close the connection unless the request (or the next one) comes within ``seconds``."""
        self._cancel_idle_timer()
        self._idle_timer = self._server.loop.call_later(seconds, self._timed_out)

    def _timed_out(self) -> None:
        """Aborted if what the node wrote has not all left, else closed: a graceful close waits
        until it has, so a client that stopped reading with an answer (or a refusal) still
        queued held the socket past every timer, for as long as it kept its window shut
        (tests/adversarial/test_breakrt18_linger_unread.py)."""
        self._idle_timer = None
        transport = self._transport
        if transport is not None and transport.get_write_buffer_size():
            transport.abort()
            return
        self._close()

    def _arm_body_timer(self, seconds: float) -> None:
        """Answer 408 unless the request's body has come whole within ``seconds``."""
        self._cancel_idle_timer()
        self._idle_timer = self._server.loop.call_later(seconds, self._body_timed_out)

    def _body_timed_out(self) -> None:
        """Answered, not only closed: nginx passes a body on as it comes, and a node that
        closed without an answer made it write an error line per request (a client may hold
        256 such requests at a time) and answer 504 unconfirmed, "it may have been done", for
        a request the node never read (tests/adversarial/test_breakrt17_stalled_bodies.py)."""
        self._idle_timer = None
        if self._h11.their_state is not h11.SEND_BODY:
            self._close()  # read whole (a handler runs, with its own bounds) or already ended
            return
        seconds = self._server.settings.handshake_timeout
        self._reject_early(
            ApiError(
                408, ErrorCode.INVALID_REQUEST, f"request body not received within {seconds} s"
            )
        )

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _head_too_long() -> ApiError:
    return ApiError(
        431, ErrorCode.INVALID_REQUEST, f"malformed request: head over {MAX_HEAD_BYTES} bytes"
    )


def _head_refused(lines: HeadLines) -> ApiError:
    """The 431 for a head its counter stopped: too many bytes or too many lines."""
    return _head_too_long() if lines.too_long else _too_many_headers()


def _too_many_headers() -> ApiError:
    return ApiError(
        431, ErrorCode.INVALID_REQUEST, f"malformed request: more than {MAX_HEADERS} headers"
    )


def _too_many_pieces() -> ApiError:
    return ApiError(
        400,
        ErrorCode.INVALID_REQUEST,
        "request body sent in too many pieces or lines (chunks, writes, trailers)",
    )


def _framed_twice() -> ApiError:
    return ApiError(
        400,
        ErrorCode.INVALID_REQUEST,
        "malformed request: both Content-Length and Transfer-Encoding",
    )


def _too_large(limit: int) -> ApiError:
    return ApiError(413, ErrorCode.FRAME_TOO_BIG, f"body larger than {limit} bytes")


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("API request handler failed", exc_info=task.exception())
