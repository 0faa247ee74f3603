"""WebSocket transport: websockets' sans-I/O protocol driven from an asyncio Protocol.

One small object per connection and no task per connection: reading is a callback, keepalive is
one node-wide timer, and fan-out appends shared frame bytes to per-connection outboxes that are
flushed once per loop turn (several frames for one client become one write). With the HTTP side
of the same port (:mod:`roomcast.net.http_public`) and the broker adapters, the only code that
touches sockets; the chat logic sees a connection only as :class:`roomcast.core.members.Member`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import sys
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Final, Protocol, cast

from websockets.exceptions import (
    InvalidMessage,
    PayloadTooBig,
    RequestLineTooLong,
    SecurityError,
)
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

from roomcast.core.addresses import limit_key
from roomcast.core.auth import (
    SUBPROTOCOL,
    TOKEN_SUBPROTOCOL_PREFIX,
    AccessPolicy,
    AuthError,
    Identity,
    RoomGrant,
    token_from_request,
)
from roomcast.core.hooks import Hooks
from roomcast.core.members import Member
from roomcast.core.ratelimit import BucketPool, ConnectionBudget, RateLimiter
from roomcast.net.admission import (
    AddressAdmission,
    Admission,
    address_busy_response,
    busy_response,
)
from roomcast.net.deflate import SharedDeflate, server_deflate, shared_deflates, shared_for
from roomcast.net.fd_limit import (
    FULL_RESPONSE,
    RETRY_AFTER_SECONDS,
    connection_limit,
    raise_open_files_limit,
    socket_limit,
)
from roomcast.net.handshake import (
    MAX_HEAD_BYTES,
    HandshakeProtocol,
    check_request,
    let_go,
    single_header,
)
from roomcast.net.heartbeat import Heartbeat
from roomcast.net.sendbuffer import SendBudget, SendBuffer, cap_socket_send_buffer, new_send_budget
from roomcast.net.token_clock import NOTICE, TokenClock
from roomcast.net.wsprotocol import PingLeavingProtocol
from roomcast.runtime.config import FRAME_OVERHEAD_BYTES
from roomcast.runtime.log_sampling import LogSampler, log_sampled
from roomcast.wire.codes import CloseCode, ErrorCode
from roomcast.wire.framing import frame_payload, text_frame, text_frame_head
from roomcast.wire.hooks import FORWARDED_HEADERS
from roomcast.wire.protocol import error, token_expiring

if TYPE_CHECKING:
    from roomcast.runtime.config import Settings
    from roomcast.runtime.metrics import Metrics

log = logging.getLogger("roomcast.transport")
# websockets logs every open/close at INFO; a busy node would drown its own logs in them.
_quiet_protocol_log = logging.getLogger("roomcast.transport.protocol")
_quiet_protocol_log.setLevel(logging.WARNING)

CHAT_PATH: Final = "/chat"
# Enough of a request to tell an API request ("GET /api/…", or any other method) from a
# WebSocket handshake.
_SNIFF_BYTES: Final = 16
# Frames a client may have waiting behind a slow one (a join's Redis round trip) before its
# socket stops being read; pausing at once would cost two epoll_ctl calls on every join.
_BACKLOG_BEFORE_PAUSE: Final = 16
# Bytes of one read handed to the frame parser at a time (see Connection._feed).
_FEED_BYTES: Final = 4096
# The frames the node parses itself once a connection is open (see Connection._receive_frames):
# final, unfragmented text, ping and pong, and a valid close (answered as websockets answers
# it). Anything else goes to websockets.
_TEXT: Final = 0x1
_CLOSE: Final = 0x8
_PING: Final = 0x9
_PONG: Final = 0xA
# A lone pong frame, as a client sends it (FIN, masked): 2 bytes of header, a 4-byte mask and at
# most 125 bytes of payload (a control frame's limit). The length byte XOR the mask bit is the
# payload's length only when the mask bit is set (else it is 128 or more, and the read too long).
_FIN_PONG: Final = 0x80 | _PONG
_MASKED: Final = 0x80
_LONE_PONG_MIN: Final = 6
_LONE_PONG_MAX: Final = _LONE_PONG_MIN + 125
# Pending connections the kernel queues before accept(); listen() silently caps it at
# net.core.somaxconn (4096, the default since Linux 5.4), so more would only mislead.
LISTEN_BACKLOG: Final = 4096
# Ping payload: nothing matches pongs to pings (any frame from the client proves it alive), so
# a constant (os.urandom here cost a getrandom() call per connection per interval).
PING_PAYLOAD: Final = b"rc"
PING_FRAME: Final = bytes((0x80 | Opcode.PING.value, len(PING_PAYLOAD))) + PING_PAYLOAD


def is_http_api_request(head: bytes) -> bool | None:
    """True: an HTTP API request; False: a WebSocket handshake (or junk); None: need more."""
    space = head.find(b" ", 0, _SNIFF_BYTES)
    if space < 0:
        return None if len(head) < _SNIFF_BYTES else False
    if head[:space] != b"GET":
        return True
    target = head[space + 1 : space + 6]
    if len(target) < 5:
        return None if b"/api/".startswith(target) else False
    return target == b"/api/"


class OutboxEntry(Protocol):
    """A connection the outbox writes to: a WebSocket, or an HTTP event stream."""

    pending: list[bytes]

    def write_pending(self) -> int: ...


class HttpHandover(Protocol):
    """The HTTP API on the same port (:mod:`roomcast.net.http_public`): takes over a socket
    whose first request is for it, with the bytes already read."""

    def take_over(self, transport: asyncio.Transport, received: bytes, peer: str) -> None: ...

    def open_sockets(self) -> int:
        """Sockets it serves now (requests, keep-alive connections, event streams)."""
        ...

    # Set by the WebSocket server: what a refused request's client sends while the API lingers
    # is charged to the client's receive budget (WebSocketServer.charge_lingering).
    charge_lingering: Callable[[str, int], bool] | None


class Application(Protocol):
    """What the transport calls; implemented by :class:`roomcast.core.node.Node`."""

    def on_open(self, conn: Connection) -> None: ...

    def on_text(self, conn: Connection, text: str) -> Awaitable[None] | None: ...

    def on_close(self, conn: Connection) -> None: ...

    def on_rejected(self, conn: Connection, code: str) -> None: ...

    async def answered(self) -> None:
        """Every message handled so far has its answer queued (a drain waits for it)."""
        ...

    def give_up_answers(self) -> None:
        """A drain waited long enough: answer every message still unanswered (it may yet be
        published) before the close."""
        ...

    def on_lagging(self, conn: Connection) -> bool:
        """``conn`` holds more than the send bound unread: True if the application takes it
        off room traffic (``conn.lagging``) and will bring it up to date once it drained
        (:meth:`on_drained`); False drops it as a slow consumer."""
        ...

    def on_drained(self, conn: Connection) -> None:
        """A lagging connection's socket drained: time to send it what it missed."""
        ...


class Outbox:
    """Frames waiting for the end of this loop turn, grouped per connection."""

    def __init__(self, loop: asyncio.AbstractEventLoop, metrics: Metrics) -> None:
        self._loop = loop
        self._metrics = metrics
        self._dirty: list[OutboxEntry] = []
        self._scheduled = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def push(self, conn: OutboxEntry, frame: bytes) -> None:
        pending = conn.pending
        pending.append(frame)
        if len(pending) == 1:
            self._dirty.append(conn)
            if not self._scheduled:
                self._scheduled = True
                self._loop.call_soon(self.flush)

    def fan_out(self, members: Iterable[Member], frame: bytes, exclude: str) -> None:
        """The hot path: the same frame object for every local member except ``exclude``."""
        dirty = self._dirty
        for conn in members:
            # A lagging member gets the room's messages from history once it drained.
            if conn.id != exclude and not conn.lagging:
                pending = conn.pending
                # Its first frame this turn: an emptiness test, not a len() call per recipient.
                if not pending:
                    dirty.append(conn)
                pending.append(frame)
        if dirty and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        delivered = 0
        for conn in dirty:
            delivered += conn.write_pending()
        if delivered:
            self._metrics.deliveries.inc(delivered)


def _join_runs(outgoing: list[bytes]) -> list[bytes]:
    """websockets' outgoing items with each run of frames joined; the empty items (end of
    stream) stay where they are."""
    joined: list[bytes] = []
    run: list[bytes] = []
    for data in outgoing:
        if data:
            run.append(data)
            continue
        if run:
            joined.append(b"".join(run))
            run = []
        joined.append(data)
    if run:
        joined.append(b"".join(run))
    return joined


class Connection(asyncio.Protocol):
    __slots__ = (
        "_answered",
        "_app",
        "_backlog",
        "_busy",
        "_close_answered",
        "_close_timer",
        "_compressed",
        "_counted",
        "_deciding",
        "_deferred",
        "_deferred_bytes",
        "_deflate",
        "_fragments",
        "_handshake_timer",
        "_head_bytes",
        "_held",
        "_ignoring_text",
        "_inbuf",
        "_paused",
        "_request_only",
        "_request_tail",
        "_send",
        "_server",
        "_settings",
        "_sniffed",
        "_streaming",
        "alive",
        "budget",
        "client_address",
        "closed",
        "id",
        "identity",
        "inbound",
        "lagging",
        "message_rate",
        "opened",
        "peer",
        "pending",
        "proto",
        "rate",
        "token_version",
        "transport",
        "typing_rate",
        "user_id",
    )

    def __init__(self, server: WebSocketServer, connection_id: str) -> None:
        self._server = server
        self._app = server.app
        self._settings = server.settings
        self.id = connection_id
        # websockets' sans-I/O protocol: the handshake, compression, closes and any unusual
        # frame. None while an uncompressed connection is open and only exchanges final text,
        # ping and pong frames, which the node parses itself: an idle connection then holds a
        # few bytes of parser state instead of websockets' ~4 KiB (its parser generators, the
        # handshake request its parser keeps, buffers, a UUID). Made again, at a frame
        # boundary, as soon as anything else comes (see _protocol).
        self.proto: PingLeavingProtocol | None = HandshakeProtocol(
            extensions=server.extensions,
            max_size=self._settings.max_frame_bytes,
            select_subprotocol=_select_subprotocol,
            logger=_quiet_protocol_log,
        )
        # Part of a frame not parsed yet (open connections without websockets' protocol only).
        self._inbuf: bytearray | None = None
        # The last bytes of the request fed to websockets while its end is not found yet
        # (None afterwards): the request goes to websockets alone, so that after the 101 its
        # protocol is known to be at a frame boundary and can be let go.
        self._request_tail: bytes | None = b""
        # The request's bytes so far, while its end is not found (handshake.MAX_HEAD_BYTES).
        self._head_bytes = 0
        # Nothing past the request reached websockets (see _flush_protocol).
        self._request_only = True
        self.transport: asyncio.Transport | None = None
        self._send: SendBuffer | None = None
        self.pending: list[bytes] = []
        self.alive = True
        # Fell behind by more than the send bound: no room traffic until it caught up.
        self.lagging = False
        self.opened = False
        self.closed = False
        self.peer = ""
        self.client_address = ""
        self.identity: Identity | None = None
        # Moves on with each refresh to another exp: the token clock's entries say which they
        # were made for (net.token_clock).
        self.token_version = 0
        self.user_id = ""  # the node's id of this user, set on open (core.user_ids)
        # Message and typing limits, made by the application on first use.
        self.message_rate: RateLimiter | None = None
        self.typing_rate: RateLimiter | None = None
        self.budget: ConnectionBudget | None = None
        # Bytes received by all connections of this client (see client_key), set on open.
        self.inbound: RateLimiter | None = None
        self.rate = RateLimiter(
            self._settings.rate_limit_per_second, self._settings.rate_limit_burst
        )
        self._compressed = False
        # The node's shared compressor of room frames, for a compressed connection that reads
        # them (net/deflate.py); otherwise websockets compresses each frame for it.
        self._deflate: SharedDeflate | None = None
        self._fragments: list[bytes] | None = None
        # A message being written in fragments (send_fragments): frames queued meanwhile wait
        # in _deferred, for nothing may come between the fragments of one message.
        self._streaming = False
        self._deferred: list[bytes] | None = None  # made when first needed
        self._deferred_bytes = 0
        self._busy = False
        self._paused = False
        self._held = False  # a draining node reads nothing more until it sent its close
        # Set by close(): text arriving after the node's own close is not handled (see _on_text).
        self._ignoring_text = False
        self._answered = False  # the handshake got its HTTP response
        # The client's close frame was answered without websockets' protocol (_answer_close):
        # closing, as websockets' CLOSING state; what the client sends from then on is dropped.
        self._close_answered = False
        self._deciding = False  # the connect hook is deciding on the handshake
        # Frames that arrived while an earlier one was being handled; made when first needed
        # (an empty deque costs ~760 bytes, a tenth of an idle connection).
        self._backlog: deque[bytes] | None = None
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        # Counted in the server's accepted sockets (from connection_made until it is lost or
        # handed to the HTTP API).
        self._counted = False
        # The start of the request until it is known to be a WebSocket handshake (then None).
        self._sniffed: bytes | None = b"" if server.http is not None else None

    # asyncio.Protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        server = self._server
        server.accepted += 1
        self._counted = True
        if server.sockets_full():
            # Every descriptor past the reserve is taken: answered 503 before anything is read,
            # rather than accepted until EMFILE, when libuv resets whoever comes next.
            self.closed = True
            server.over_limit()
            self.transport.write(FULL_RESPONSE)
            self.transport.close()
            return
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else ""
        # Interned: the connections of one address (all of them, behind a proxy) share it.
        self.client_address = sys.intern(str(peer[0])) if isinstance(peer, tuple) else ""
        self._send = SendBuffer(
            self.transport,
            self._settings.send_buffer_bytes,
            self._server.send_budget,
            limit_key(self.client_address),
        )
        # The kernel's send buffer is capped already: accepted from a listener that has the cap
        # (WebSocketServer.start), the socket inherited it.
        self._handshake_timer = self._server.loop.call_later(
            self._settings.handshake_timeout, self._handshake_expired
        )

    def data_received(self, data: bytes) -> None:
        if self.closed and (self.proto is None or self.proto.eof_sent):
            # Lingering after a close we sent (a flood, a refusal): the rest of what the client
            # sends is dropped unparsed, but still read, so that closing the socket later does
            # not reset it with unread input and destroy the close frame on its way. Bounded by
            # the close timer (close_timeout), which aborts a client that never stops, and by
            # the client's receive budget: past it nothing more is read until the timer
            # (paused, not reset: a reset could still destroy the close frame). Uncharged, 4
            # closed connections made a node read 2.3 GB in the 5 s (1.2 s of its CPU), ~55
            # times their budgets (tests/adversarial/test_breakrt18_lingering_floods.py).
            transport = self.transport
            if not self._server.charge_lingering(self.client_key, len(data)) and transport:
                transport.pause_reading()
            return
        if (
            not self.alive
            and self.proto is None
            and self._inbuf is None
            and _LONE_PONG_MIN <= len(data) <= _LONE_PONG_MAX
            and data[0] == _FIN_PONG
            and len(data) == (data[1] ^ _MASKED) + _LONE_PONG_MIN
        ):
            # The pong answering the heartbeat's ping, alone in its read: what every idle
            # connection sends once per interval. It proves the client alive, and that is all
            # it does: no frame parser, no rate charge (one free pong per ping the node sent,
            # since ``alive`` is only cleared by a ping, so it cannot carry a flood). This was
            # 8.5 of the ~10 µs of Python an idle connection cost per interval.
            self.alive = True
            return
        self.alive = True
        if self._close_answered:
            return  # after a close, websockets' parser discards everything until the end
        if self._sniffed is not None:
            if self._sniffed:  # the request line came in pieces (rare): join them
                data = self._sniffed + data
            is_api = is_http_api_request(data)
            if is_api is None:
                self._sniffed = data
                return
            self._sniffed = None
            if is_api:
                self._hand_over(data)
                return
        try:
            self._receive(data)
        except Exception:
            log.exception("connection handler failed", extra={"connection": self.id})
            self.fail(CloseCode.INTERNAL_ERROR, "internal error")
        self._flush_protocol()

    def _receive(self, data: bytes) -> None:
        if self.proto is None:
            self._receive_frames(data)
            return
        tail = self._request_tail
        if tail is not None:
            joined = tail + data if tail else data
            end = joined.find(b"\r\n\r\n")
            head_bytes = self._head_bytes + (len(data) if end < 0 else end + 4 - len(tail))
            if head_bytes > MAX_HEAD_BYTES:
                self._head_over_bound(head_bytes)
                return
            self._head_bytes = head_bytes
            if end < 0:
                self._request_tail = joined[-3:]
                self._feed(data)
                return
            self._request_tail = None
            cut = end + 4 - len(tail)
            request, data = data[:cut], data[cut:]
            self._feed(request)
            if not data:
                return
            # Frames right behind the request (a client that did not wait for the 101): they
            # come after the handshake's answer, which lets websockets' protocol go if it can.
            self._flush_protocol()
            if self.proto is None:
                if not self.closed:
                    self._receive_frames(data)
                return
        self._request_only = False
        self._feed(data)

    def _feed(self, data: bytes, pong: bytes | None = None) -> None:
        # Fed in slices, so that a read full of tiny frames stops being parsed as soon as one
        # of them closed the connection (a flood), instead of parsing the whole read first.
        proto = self.proto
        assert proto is not None
        whole = len(data) <= _FEED_BYTES
        # As _receive_frames: one pong per read, for the last ping the client could afford
        # (``pong``: the one of this read that the node's own parser saw before handing over).
        proto.last_ping = pong
        for start in range(0, len(data), _FEED_BYTES):
            proto.receive_data(data if whole else data[start : start + _FEED_BYTES])
            pong = self._process_events(pong)
            if proto.parser_exc is not None and not self.closed:
                self._parser_failed(proto.parser_exc)
            if self.closed or proto.state is State.CLOSING or proto.state is State.CLOSED:
                break
        proto.last_ping = None
        if pong is not None and not self.closed and proto.state is State.OPEN:
            proto.send_pong(pong)
        if self._answered:
            return
        if isinstance(proto.handshake_exc, InvalidMessage):
            self._malformed_request()
        elif isinstance(proto.handshake_exc, SecurityError):
            self._head_too_large(proto.handshake_exc)

    def _receive_frames(self, data: bytes | bytearray) -> None:
        """An open connection without websockets' protocol: parse final, unfragmented, masked
        text, ping and pong frames here, exactly as websockets would; hand everything else
        (a close, fragments, binary, reserved bits, 64-bit lengths, a frame over the size
        limit) to a websockets protocol made at that frame's start, which keeps it from then
        on."""
        inbuf = self._inbuf
        if inbuf is not None:
            self._inbuf = None
            inbuf += data
            data = inbuf
        end = len(data)
        pos = 0
        limit = self._settings.max_frame_bytes
        handover = False
        # RFC 6455 5.5.3: pings answered before a pong went out may be answered once, for the
        # last of them. One pong per read, not one write per ping: a ping flood otherwise cost
        # the node a send() call per 6-byte frame, and stalled it for tens of ms per read.
        pong: bytes | None = None
        while pos < end and not self.closed and self.proto is None:
            if end - pos < 2:
                break
            first = data[pos]
            second = data[pos + 1]
            opcode = first & 0x0F
            length = second & 0x7F
            # FIN set, no reserved bits, masked (a client must mask), a kind parsed here.
            if (
                first & 0xF0 != 0x80
                or not second & 0x80
                or opcode not in (_TEXT, _PING, _PONG, _CLOSE)
            ):
                handover = True
                break
            head = pos + 6
            if length == 126:
                if opcode != _TEXT or end - pos < 4:
                    handover = opcode != _TEXT  # control frames are at most 125 bytes
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                head = pos + 8
            elif length == 127:
                handover = True
                break
            if length > limit:
                handover = True  # websockets closes it with 1009
                break
            stop = head + length
            if stop > end:
                break
            payload = apply_mask(data[head:stop], data[head - 4 : head])
            if opcode == _CLOSE:
                if self._answer_close(payload, pong):
                    return  # what follows a close is discarded, as websockets' parser does
                handover = True  # one websockets refuses: it answers it its own way
                break
            pos = stop
            # A ping is charged like any frame, and only one the client could afford is
            # answered: a refused ping gets its rate_limited error, not a pong as well.
            if self._frame(opcode, payload, True) and opcode == _PING:
                pong = payload
        if self.closed:
            return  # failed by one of these frames: the rest is not parsed (as websockets)
        if pong is not None and self.proto is None and not handover:
            self._pong(pong)
            pong = None
        self._keep_rest(data[pos:] if pos else data, handover, pong)

    def _keep_rest(self, rest: bytes | bytearray, handover: bool, pong: bytes | None) -> None:
        """After _receive_frames: a partial frame waits for the next read; from a frame this
        node does not parse on, websockets takes the connection over (and the read's last
        affordable ping so far, answered once for the whole read)."""
        if self.proto is None and not handover:
            if rest:
                self._inbuf = rest if isinstance(rest, bytearray) else bytearray(rest)
            return
        # The rest, from a frame boundary, goes to websockets (made now if needed).
        proto = self._protocol()
        self._request_only = False
        if rest:
            self._feed(bytes(rest), pong)
        elif pong is not None and proto.state is State.OPEN:
            proto.send_pong(pong)

    def _answer_close(self, payload: bytes, pong: bytes | None) -> bool:
        """The client's close frame, on an open connection without websockets' protocol:
        answered with the bytes websockets' protocol, made again for it, would write (its
        ``recv_frame`` as a server, and PingLeavingProtocol's pong first), without making one:
        that protocol (its uuid4, a getrandom system call, parser generators, a Frame) was
        half of a close's Python. Then the rooms are left at once and the stream half-closed
        (_end_after_close). False, and nothing done, for a close
        websockets refuses (a bad code, a 1-byte payload, a reason that is not UTF-8) or while
        a message is written in fragments (its close waits for the frame's end there):
        websockets takes those."""
        if self._streaming:
            return False
        try:
            Close.parse(payload)  # websockets' own checks of the code and the reason
        except Exception:
            return False
        # From here on the connection is closing, as websockets' CLOSING state: not open
        # (_is_open, write_pending), and the rest of the client's input discarded.
        self._close_answered = True
        # Charged like any frame, after the close was taken, as websockets' events are: a
        # refusal is counted, and its answer (an error frame, a close) no longer goes out.
        self._frame(_CLOSE, payload, True)
        send = self._send
        transport = self.transport
        if send is None or transport is None:
            return True
        # The read's last affordable ping answered first (RFC 6455 5.5.2), then the close frame
        # echoed with the client's own code and reason (websockets echoes the bytes, unmasked),
        # in one write.
        echo = b"\x88" + bytes((len(payload),)) + payload
        if pong is not None:
            echo = b"\x8a" + bytes((len(pong),)) + pong + echo
        send.write(echo, force=True)
        send.flush()
        self._end_after_close(transport)
        return True

    def _end_after_close(self, transport: asyncio.Transport) -> None:
        """Both close frames have passed (the echo is queued): the rooms are left now, and the
        stream ends with a half-close; the socket closes once the client ends its side, or at
        the close timer. Closing it outright was a reset for a client that still sent bytes
        (a pong to a ping that crossed its close, which RFC 6455 5.5.2 lets it send, a second
        close, garbage) in a later read: a socket closed with input arriving sends an RST, and
        the kernel throws away what it had not sent yet, the echo and frames queued before it
        (tests/integration/test_client_close_then_more_input.py)."""
        if transport.can_write_eof():
            transport.write_eof()
            if self._close_timer is None:
                self._close_timer = self._server.loop.call_later(
                    self._settings.close_timeout, self.abort
                )
        else:
            transport.close()
        # The client is gone for the rooms at once, not when its end of the stream comes
        # (tests/integration/test_client_close_leaves_at_once.py).
        self._finish()

    def _protocol(self) -> PingLeavingProtocol:
        """websockets' protocol for this connection, made again if the node let it go: open,
        at a frame boundary (a partial frame waiting in _inbuf is fed to it)."""
        proto = self.proto
        if proto is None:
            proto = self.proto = PingLeavingProtocol(
                state=State.OPEN,
                max_size=self._settings.max_frame_bytes,
                logger=_quiet_protocol_log,
            )
            inbuf = self._inbuf
            if inbuf:
                self._inbuf = None
                proto.receive_data(bytes(inbuf))  # less than a frame: no event comes out yet
        return proto

    def _is_open(self) -> bool:
        proto = self.proto
        # Without websockets' protocol a connection is open until it ends (_finish) or answered
        # the client's close (_answer_close).
        if proto is not None:
            return proto.state is State.OPEN
        return not self.closed and not self._close_answered

    def _pong(self, payload: bytes) -> None:
        if self._streaming:
            # Inside one frame's payload nothing else may be written: websockets holds the pong
            # until the message is complete (see _flush_protocol).
            self._protocol().send_pong(payload)
            return
        self._write_control(b"\x8a" + bytes((len(payload),)) + payload)

    def _write_control(self, frame: bytes) -> None:
        # As _flush_protocol writes websockets' control frames: through the send buffer, and a
        # client whose unread bytes pile up past the bound (pongs it never reads) is dropped.
        send = self._send
        if send is not None and not send.write(frame, force=self.lagging):
            self.drop_slow_consumer()

    def _malformed_request(self) -> None:
        """Not even an HTTP request websockets could parse (a header it refuses, a body, ...).

        websockets just ends the stream; a proxy would take that for a dead node (nginx marks
        it failed and retries the request on the next one), so answer 400 like any refusal."""
        self._answered = True
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self._server.metrics.handshakes_rejected.labels("400").inc()
        self._refused(AuthError(400, ErrorCode.MALFORMED_REQUEST, "malformed HTTP request"))
        if self.transport is not None:
            body = b"malformed HTTP request\n"
            self.transport.write(
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )

    def eof_received(self) -> bool:
        if self.proto is None:
            # As websockets does for an open connection (1006, no close frame): what is held
            # goes out, then our end of the stream; leave every room now.
            if self._close_answered:
                # As websockets' protocol after a close: our end of the stream is out, and the
                # rooms are left when the connection is lost (returning False closes it).
                return False
            send = self._send
            if send is not None and not self.closed:
                send.flush()
                if self.transport is not None and self.transport.can_write_eof():
                    self.transport.write_eof()
            self._finish()
            return False
        self.proto.receive_eof()
        self._flush_protocol()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._uncount()
        if self.proto is not None:
            self.proto.receive_eof()
        self._inbuf = None
        self._cancel_timers()
        self.pending.clear()
        if self._send is not None:
            self._send.release()
        self._finish()

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self._server.accepted -= 1

    def pause_writing(self) -> None:
        if self._send is not None:
            self._send.pause()

    def resume_writing(self) -> None:
        send = self._send
        if send is None:
            return
        send.resume()
        if not send.drained or self.closed:
            return
        if not send.wake() and self.lagging:
            self._app.on_drained(self)

    def _hand_over(self, received: bytes) -> None:
        """An HTTP API request, not a WebSocket: the API's HTTP protocol takes the socket."""
        self._cancel_timers()
        self.closed = True
        self._uncount()  # the HTTP API counts it from now on
        if self._send is not None:
            self._send.release()
        http = self._server.http
        if self.transport is not None and http is not None:
            http.take_over(self.transport, received, self.client_address)

    # Sending

    def send(self, payload: bytes) -> None:
        """Queue one JSON event for this connection alone."""
        if not self.closed:
            self._server.outbox.push(self, text_frame(payload))

    def write_pending(self) -> int:
        """Write the frames queued this loop turn in one go; returns how many were written."""
        pending = self.pending
        count = len(pending)
        if not count:
            return 0
        self.pending = []
        send = self._send
        proto = self.proto
        # _is_open() inlined (once per recipient of every delivery): open unless closed, or
        # websockets' protocol, when it has one, says otherwise, or without one the client's
        # close was answered.
        if (
            self.closed
            or send is None
            or (proto.state is not State.OPEN if proto is not None else self._close_answered)
        ):
            return 0
        if self._streaming:
            return self._hold_back(pending)
        if self._compressed:
            proto = self._protocol()
            deflate = self._deflate
            if deflate is None:
                for frame in pending:
                    proto.send_text(frame_payload(frame))
                pending = proto.data_to_send()
            else:
                # What websockets holds for it (a pong) keeps its place before them.
                pending = [*proto.data_to_send(), *map(deflate.frame, pending)]
        size = len(pending[0]) if count == 1 else sum(map(len, pending))
        if self.lagging:
            # Only its own answers and what it missed come now (no room traffic); they may take
            # it up to twice the bound before it is given up.
            send.write_pieces(pending, size, force=True)
            # While the node holds more than its total for backed-up clients, a lagging one
            # gets no slack beyond its own bound.
            slack = 1 if send.shedding else 2
            if send.outstanding > slack * self._settings.send_buffer_bytes:
                self.drop_slow_consumer()
                return 0
            return count
        offered = send.offer(pending, size)
        if not offered:
            return count
        queued = offered > 0
        # More than the bound waits for this client once the kernel took what it could.
        if not self._app.on_lagging(self):
            self.drop_slow_consumer()
            return 0
        # It falls behind: this turn's frames still go (nothing is skipped), then no more room
        # traffic until it drained; the application sends what it missed from history.
        self.lagging = True
        if not queued:
            send.write_pieces(pending, size, force=True)
        return count

    def _hold_back(self, frames: list[bytes]) -> int:
        """Frames queued while a message is written in fragments wait for its end; past the
        send bound the connection lags (no more room traffic), past twice that it is dropped."""
        if self._deferred is None:
            self._deferred = []
        self._deferred.extend(frames)
        self._deferred_bytes += sum(map(len, frames))
        bound = self._settings.send_buffer_bytes
        if self._deferred_bytes > bound and not self.lagging:
            if not self._app.on_lagging(self):
                self.drop_slow_consumer()
                return 0
            self.lagging = True
        if self._deferred_bytes > 2 * bound:
            self.drop_slow_consumer()
            return 0
        return len(frames)

    async def send_pieces(self, length: int, pieces: AsyncIterator[bytes]) -> bool:
        """Write one text message of ``length`` bytes, the next piece only once the socket
        drained (an answer larger than the send bound): a client that does not read pins one
        piece and what waits for it, never the whole message. Uncompressed it is one frame of
        known length (any client reads it); compressed, fragments (its length is not known
        before). Frames for it queued meanwhile follow it. A client that does not drain within
        the lag timeout is dropped (1013); if ``pieces`` fails (history moved on), the message
        cannot be completed and the connection is cut (the client reconnects and asks again).
        True once the whole message was handed to the transport."""
        self.write_pending()  # what was queued before goes first
        if self.closed or not self._is_open() or self._streaming:
            return False
        self._streaming = True
        complete = False
        written = 0
        try:
            if not self._compressed:
                self._write_raw(text_frame_head(length))
            async for piece in pieces:
                if self.closed or not self._is_open():
                    return False
                if self._compressed:
                    if written:
                        self._protocol().send_continuation(piece, fin=False)
                    else:
                        self._protocol().send_text(piece, fin=False)
                    self._write_fragment()
                else:
                    self._write_raw(piece)
                written += len(piece)
                if not await self._drained():
                    return False
            if self.closed or not self._is_open() or written != length:
                return False
            if self._compressed:
                self._protocol().send_continuation(b"", fin=True)
                self._write_fragment()
            complete = True
            return True
        except Exception as exc:
            log.info("streamed answer failed", extra={"connection": self.id, "reason": str(exc)})
            return False
        finally:
            self._streaming = False
            deferred, self._deferred, self._deferred_bytes = self._deferred, None, 0
            if not complete:
                # Mid-frame nothing else can be sent, not even a close frame: cut the socket.
                self.abort()
                self._finish()
            else:
                self._flush_protocol()  # control frames held during the frame
                if deferred and not self.closed:
                    self.pending[:0] = deferred
                    self.write_pending()
                if self.lagging and self.send_drained and not self.closed:
                    self._app.on_drained(self)

    def _write_raw(self, data: bytes) -> None:
        # Written whole: the previous piece had drained, so the send bound holds it.
        if self._send is not None:
            self._send.write(data, force=True)

    def _write_fragment(self) -> None:
        # Written whole: the previous piece had drained, so the send bound holds it.
        send = self._send
        if send is not None:
            for data in self._protocol().data_to_send():
                if data:
                    send.write(data, force=True)

    async def _drained(self) -> bool:
        """Wait until the socket drained; False if the connection ended or did not drain
        within the lag timeout (then dropped as a slow consumer)."""
        send = self._send
        if send is None or self.closed:
            return False
        try:
            await send.wait_drained(
                self._server.loop,
                self._settings.lag_timeout,
                functools.partial(self.drop_slow_consumer, "slow consumer: not reading"),
            )
        except asyncio.CancelledError:
            if self.closed:
                return False
            raise
        return not self.closed

    def ping(self) -> None:
        if not self._is_open() or self._send is None:
            return
        if self._streaming:
            # Inside one frame's payload: the protocol holds the ping until that frame ends.
            self._protocol().send_ping(PING_PAYLOAD)
            self._flush_protocol()
            return
        # Framed once for all (a server's frames are unmasked, control frames never
        # compressed): the heartbeat's cost per connection is one write, not a frame object
        # and a trip through the protocol's buffer (about 3x less Python per ping).
        self._write_control(PING_FRAME)

    def hold_input(self) -> None:
        """Read nothing more from this client until the node sent its close (a drain): what
        the client sends meanwhile is never handled, so never published."""
        self._held = True
        if self.transport is not None:
            self.transport.pause_reading()

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake (pending frames go first); abort if it stalls."""
        self._ignoring_text = True
        if self._is_open():
            self.write_pending()
            # Writing may have dropped it as a slow consumer, which closes it already.
            if self._is_open():
                self._protocol().send_close(code, reason)
                self._flush_protocol()
        if self._held:
            # Read again, for the client's close frame (unread input would make closing the
            # socket reset it); its text frames after our close are dropped (_on_text).
            self._held = False
            if self.transport is not None and not self.closed and not self._paused:
                self.transport.resume_reading()

    def fail(self, code: int, reason: str) -> None:
        """Close at once for a protocol-level rejection (binary frame, flood, ...)."""
        if self._is_open():
            self.write_pending()
            if self._is_open():
                self._protocol().fail(code, reason)
                self._flush_protocol()
            self._finish()
        elif not self.opened:
            # Failed during the handshake (its timer is gone by then): never leave it hanging.
            self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    @property
    def client_key(self) -> str:
        """Who is behind this connection, for limits shared by its connections: the token's
        subject, or (open mode) the client address (an IPv6 client's /64)."""
        identity = self.identity
        return (
            f"sub:{identity.subject}"
            if identity is not None
            else f"ip:{limit_key(self.client_address)}"
        )

    # Token lifetime

    @property
    def token_expires(self) -> float | None:
        identity = self.identity
        return None if identity is None else identity.expires

    def verify_token(self, token: str) -> Identity:
        """A refreshed token checked like a handshake's; raises AuthError."""
        verifier = self._server.verifier
        if verifier is None:
            raise AuthError(400, ErrorCode.TOKENS_OFF, "this node does not use tokens")
        return verifier.verify(token)

    def verify_room_token(self, token: str) -> RoomGrant:
        """A join's room token; raises AuthError."""
        verifier = self._server.verifier
        if verifier is None:
            raise AuthError(400, ErrorCode.TOKENS_OFF, "this node does not use tokens")
        return verifier.verify_room(token)

    def adopt(self, identity: Identity) -> None:
        """Hold a refreshed token from now on: its exp decides when this connection ends."""
        if identity.expires == self.token_expires:
            self.identity = identity
            return
        tokens = self._server.tokens
        tokens.forget(self)
        self.identity = identity
        self.token_version += 1
        tokens.track(self)

    # Internals

    def _flush_protocol(self) -> None:
        transport = self.transport
        send = self._send
        proto = self.proto
        if transport is None or send is None or proto is None:
            return
        if self._streaming and not self._compressed:
            return  # inside one frame's payload: pongs and the like wait for its end
        outgoing = proto.data_to_send()
        # Frames queued in this same turn (the welcome after the handshake response) ride in
        # the same write instead of a second one at the end of the turn.
        if (
            self.pending
            and not self._streaming
            and outgoing
            and outgoing[-1]
            and not self._compressed
            and proto.state is State.OPEN
        ):
            outgoing[-1] += b"".join(self.pending)
            self._server.metrics.deliveries.inc(len(self.pending))
            self.pending = []
        over = False
        # A closing connection's last frames go out whatever it holds unread (the close timer
        # aborts it if it never reads them); so do a lagging one's pings and pongs (its lag has
        # a deadline of its own).
        force = self.lagging or proto.state is not State.OPEN
        if len(outgoing) > 1:
            # websockets gives one item per frame (a pong per ping of a read): one write for
            # each run of frames, not one send() call each.
            outgoing = _join_runs(outgoing)
        for data in outgoing:
            if data:
                # Through the send buffer, so control frames keep their place behind data.
                over = not send.write(data, force=force) or over
                continue
            send.flush()  # what waits goes out before the end of the stream
            if proto.close_rcvd is not None:
                # The client's close answered (a compressed connection, a 16-bit length): as
                # _answer_close, half-close and leave the rooms now.
                self._end_after_close(transport)
            elif transport.can_write_eof():
                # End of stream after a close of ours the client has not answered (a failure):
                # half-close, and keep reading (and discarding) until the client closes too.
                # Closing outright with unread input would send an RST, and the client could
                # lose our close frame with it.
                transport.write_eof()
            else:
                transport.close()
        if over and proto.state is State.OPEN:
            self.drop_slow_consumer()  # e.g. pongs piling up for a client that never reads
        if proto.close_expected() and self._close_timer is None:
            self._close_timer = self._server.loop.call_later(
                self._settings.close_timeout, self.abort
            )
        if (
            self._request_only
            and self.opened
            and not self._compressed
            and proto.state is State.OPEN
            and self.proto is proto
        ):
            # The 101 is out and websockets saw nothing past the request: its parser waits at a
            # frame boundary with nothing buffered, so the node parses the frames from here on.
            self._request_only = False
            self.proto = None
            let_go(proto)

    def _process_events(self, pong: bytes | None) -> bytes | None:
        """Handle what websockets parsed; returns the payload of the last ping the client
        could afford (``pong`` if none), which _feed answers once the read is parsed."""
        proto = self.proto
        assert proto is not None
        for event in proto.events_received():
            if self.closed or self._deciding:
                # Closed by an earlier frame of the same read, or frames sent before the
                # handshake's answer (a client must wait for its 101): ignore the rest.
                break
            if isinstance(event, Request):
                self._handshake(event)
            elif isinstance(event, Frame):
                allowed = self._frame(event.opcode, event.data, event.fin)
                if allowed and event.opcode is Opcode.PING:
                    pong = bytes(event.data)
        return pong

    def _handshake(self, request: Request) -> None:
        self._answered = True
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        try:
            decision = self._decide(request)
        except Exception:
            # Whatever a request holds, it gets an answer: a proxy takes a dropped handshake
            # for a dead node (nginx then stops sending anyone there for a while).
            log.exception("handshake handler failed", extra={"connection": self.id})
            decision = self._protocol().reject(500, "internal error\n")
        if isinstance(decision, Response):
            self._respond(decision)
        else:
            self._defer(request, decision)

    def _defer(self, request: Request, pending: Coroutine[None, None, Identity]) -> None:
        """The connect hook decides; meanwhile nothing more is read from this client."""
        self._deciding = True
        if self.transport is not None:
            self.transport.pause_reading()
        server = self._server
        task = server.loop.create_task(self._await_identity(request, pending))
        server.deciding.add(task)  # a reference, so the task cannot be collected
        task.add_done_callback(server.deciding.discard)

    def _head_too_large(self, exc: SecurityError) -> None:
        """A request line or header line over 8 KiB, or over 128 headers (a token too long for
        the query or a subprotocol): websockets answered it itself (414, 431), before the node
        saw a request, so it was counted nowhere."""
        self._answered = True
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        status = 414 if isinstance(exc, RequestLineTooLong) else 431
        self._server.metrics.handshakes_rejected.labels(str(status)).inc()
        self._refused(AuthError(status, ErrorCode.MALFORMED_REQUEST, str(exc)))

    def _head_over_bound(self, received: int) -> None:
        """A request head past MAX_HEAD_BYTES: answered 431 as websockets answers a header line
        too long (its answer, the end of the stream, the rest of the input discarded), before
        websockets parses the bytes past the bound."""
        proto = self.proto
        assert proto is not None
        exc = SecurityError(f"request head over {MAX_HEAD_BYTES} bytes ({received} so far)")
        proto.handshake_exc = exc
        proto.send_response(proto.reject(431, f"Failed to open a WebSocket connection: {exc}.\n"))
        self._request_tail = None
        self._head_too_large(exc)

    async def _await_identity(
        self, request: Request, pending: Coroutine[None, None, Identity]
    ) -> None:
        try:
            self.identity = await pending
            response = self._protocol().accept(request)
        except AuthError as exc:
            self._refused(exc)
            response = self._protocol().reject(exc.status, f"{exc.reason}\n")
        except Exception:
            log.exception("connect hook handling failed", extra={"connection": self.id})
            response = self._protocol().reject(500, "internal error\n")
        self._deciding = False
        if self.closed:
            return  # the client went away while the hook was deciding
        self._respond(response)
        self._flush_protocol()
        if self.transport is not None and not self.closed and not self._paused and not self._held:
            self.transport.resume_reading()

    def _respond(self, response: Response) -> None:
        server = self._server
        self._protocol().send_response(response)
        if response.status_code != 101:
            server.metrics.handshakes_rejected.labels(str(response.status_code)).inc()
            return
        extensions = self._protocol().extensions
        self._compressed = bool(extensions)
        if extensions:
            self._deflate = shared_for(extensions[0], server.deflates)
        server.opened(self)
        self._app.on_open(self)

    def _node_full(self) -> Response:
        """Refused before any token check or hook call: the node holds all it may."""
        self._server.over_limit()
        response = self._protocol().reject(503, "node full: try again later or another node\n")
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    def _decide(self, request: Request) -> Response | Coroutine[None, None, Identity]:
        server = self._server
        client: str | None = None  # the address's limit key, once known
        try:
            address = server.proxies.forwarded_client(
                self.client_address, single_header(request.headers, "X-Forwarded-For")
            )
            if address is None:
                raise AuthError(
                    400, ErrorCode.MALFORMED_HEADER, "X-Forwarded-For is not an address"
                )
            self.client_address = address
            # First, before any other work: an address past its own setup rate (429), then a
            # node past its setup rate (503), refuse cheaply. In this order, so that one
            # address's flood is refused before it takes the node's tokens.
            client = limit_key(address)
            if self._send is not None:
                self._send.belongs_to(client)  # the node's send total sheds by address
            retry_after = server.address_admission.admit(client)
            if retry_after is not None:
                return address_busy_response(self._protocol(), retry_after)
            retry_after = server.admission.admit()
            if retry_after is not None:
                return busy_response(self._protocol(), retry_after)
            offered = check_request(request.path, request.headers)
            if request.path.split("?", 1)[0] != CHAT_PATH:
                return self._protocol().reject(
                    404, f"Not Found: WebSocket endpoint is {CHAT_PATH}\n"
                )
            if len(server.connections) >= server.max_connections:
                return self._node_full()
            admitted = server.admit(request, offered, address)
            if admitted is not None and not isinstance(admitted, Identity):
                return admitted  # the connect hook's call, awaited by _defer
            self.identity = admitted
        except AuthError as exc:
            if exc.code == ErrorCode.TOKEN_SIGNATURE and client is not None:
                server.address_admission.forged(client)
            self._refused(exc)
            return self._protocol().reject(exc.status, f"{exc.reason}\n")
        return self._protocol().accept(request)

    def _refused(self, exc: AuthError) -> None:
        server = self._server
        server.metrics.auth_failures.labels(exc.code).inc()
        # Sampled: a client may send bad handshakes at the admission rates, and a line each
        # made 366 KB of logs out of 2,000 refusals (tests/adversarial/test_redteam17_logs.py).
        log_sampled(
            server.refusals_logged,
            exc.code,
            log,
            logging.INFO,
            "handshake refused",
            {"code": exc.code, "status": exc.status, "client": self.client_address},
        )

    def _frame(self, opcode: int, data: bytes | bytearray | memoryview, fin: bool) -> bool:
        """One frame, parsed by websockets or by _receive_frames (opcode as an int then);
        False when it was refused (over the client's rates)."""
        # Every frame costs the client one token, whatever its type: empty continuations and
        # unsolicited pongs cost the node as much to parse as a text frame (issue 15).
        inbound = self.inbound
        if inbound is not None and not inbound.allow(len(data) + FRAME_OVERHEAD_BYTES):
            # The client's connections together sent too much: refused like a frame over this
            # connection's own rate, and counted against it (1008 if it keeps on).
            self.rate.strike()
            if opcode in (Opcode.TEXT, Opcode.CONT):
                self._fragments = None
            self._rate_limited()
            return False
        if not self.rate.allow():
            if opcode in (Opcode.TEXT, Opcode.CONT):
                # A message that lost a fragment is dropped whole; its later fragments are
                # discarded (still counted) until its final one.
                self._fragments = None
            self._rate_limited()
            return False
        if opcode == Opcode.TEXT:
            if fin:
                self._on_text(bytes(data))
            else:
                self._fragments = [bytes(data)]
        elif opcode == Opcode.CONT:
            fragments = self._fragments
            if fragments is None:
                return True  # the rest of a message refused above
            if len(fragments) >= self._settings.max_fragments:
                self._app.on_rejected(self, ErrorCode.TOO_MANY_FRAGMENTS)
                self.fail(CloseCode.MESSAGE_TOO_BIG, "message split into too many fragments")
                return False
            # websockets bounds the message's bytes (max_size spans fragments); the count
            # above bounds the list, so empty fragments cannot grow it either.
            fragments.append(bytes(data))
            if fin:
                self._fragments = None
                self._on_text(b"".join(fragments))
        elif opcode == Opcode.BINARY:
            self._app.on_rejected(self, ErrorCode.BINARY_FRAME)
            self.fail(CloseCode.UNSUPPORTED_DATA, "binary frames are not supported; send JSON text")
        # PING, PONG and CLOSE: websockets answered them already (a ping parsed here is
        # answered by _receive_frames); they were counted above.
        return True

    def _parser_failed(self, exc: Exception) -> None:
        # websockets already sent the close frame (1009 too big, 1002 protocol error, ...);
        # count it and leave the rooms now rather than when the socket finally goes.
        code = (
            ErrorCode.FRAME_TOO_BIG
            if isinstance(exc, PayloadTooBig)
            else (ErrorCode.PROTOCOL_VIOLATION)
        )
        if not isinstance(exc, EOFError):
            self._app.on_rejected(self, code)
        self._finish()

    def _rate_limited(self) -> None:
        if self.rate.flooding:
            self._app.on_rejected(self, ErrorCode.FLOOD)
            self.fail(CloseCode.POLICY_VIOLATION, "flood: too many frames")
        else:
            self._app.on_rejected(self, ErrorCode.RATE_LIMITED)
            self.send(error(ErrorCode.RATE_LIMITED, "too many frames; slow down"))

    def _on_text(self, data: bytes) -> None:
        if self._ignoring_text:
            # After the node's own close (RFC 6455 5.5.1: the client may still send; we may
            # ignore it): a message handled now would be published with no way to answer its
            # sender. A close websockets decides for a bad frame later in the same read leaves
            # the frames before it handled, as the node's own parser does.
            return
        if self._busy:
            if self._backlog is None:
                self._backlog = deque()
            self._backlog.append(data)
            if len(self._backlog) >= _BACKLOG_BEFORE_PAUSE and not self._paused:
                self._paused = True
                if self.transport is not None:
                    self.transport.pause_reading()
            return
        try:
            text = data.decode()
        except UnicodeDecodeError:
            self._app.on_rejected(self, ErrorCode.INVALID_UTF8)
            self.fail(CloseCode.INVALID_DATA, "text frame is not valid UTF-8")
            return
        pending = self._app.on_text(self, text)
        if pending is not None:
            # Later frames of this client wait until this one is done (e.g. a join until its
            # subscription is confirmed), so a client's frames are handled in order.
            self._busy = True
            # The loop given, not looked up (a getpid() system call on Python 3.11).
            task = asyncio.ensure_future(pending, loop=self._server.loop)
            task.add_done_callback(self._resume)

    def _resume(self, task: asyncio.Future[None]) -> None:
        self._busy = False
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "frame handler failed",
                exc_info=task.exception(),
                extra={"connection": self.id},
            )
        if self.closed:
            self._backlog = None
            return
        while self._backlog and not self._busy:
            self._on_text(self._backlog.popleft())
        if not self._backlog:
            self._backlog = None
        self._flush_protocol()
        if self._paused and not self._busy and self.transport is not None and not self.closed:
            self._paused = False
            if not self._held:
                self.transport.resume_reading()

    @property
    def send_drained(self) -> bool:
        """Nothing waits in the node for this client beyond the transport's low-water mark (and
        no message is being written to it in fragments)."""
        return self._send is not None and self._send.drained and not self._streaming

    def drop_slow_consumer(self, reason: str = "slow consumer: not reading fast enough") -> None:
        """Close 1013: the client does not read (or fell behind further than can be made up)."""
        if self.closed:
            return
        self._server.metrics.slow_consumer_drops.inc()
        self._app.on_rejected(self, ErrorCode.SLOW_CONSUMER)
        log_sampled(
            self._server.drops_logged,
            ErrorCode.SLOW_CONSUMER,
            log,
            logging.INFO,
            "slow consumer dropped",
            {"connection": self.id, "peer": self.peer, "reason": reason, "lag": self.lagging},
        )
        # What the node held back is freed now; the close frame queues behind what the transport
        # already has, and the close timer aborts the socket if the client never reads it.
        # Either way it gets no more room traffic from now on.
        if self._send is not None:
            self._send.discard()
        if self._is_open():
            self._protocol().send_close(CloseCode.TRY_AGAIN_LATER, reason)
        self._flush_protocol()
        self._finish()

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        if not self.opened:
            self._server.metrics.handshakes_rejected.labels("timeout").inc()
            self.abort()

    def _cancel_timers(self) -> None:
        for timer in (self._handshake_timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        self._handshake_timer = self._close_timer = None

    def _finish(self) -> None:
        """Leave every room once, whatever ended the connection."""
        if self.closed:
            return
        self.closed = True
        self._fragments = None
        self._backlog = None
        if self._send is not None:
            self._send.wake()
        if self.opened:
            self._server.closed(self)
            self._app.on_close(self)


def _select_subprotocol(
    protocol: ServerProtocol, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    # A browser that offered subprotocols fails unless one is selected: prefer "roomcast",
    # else echo the token entry it offered; a client that offered none gets none.
    if SUBPROTOCOL in offered:
        return Subprotocol(SUBPROTOCOL)
    for entry in offered:
        if entry.startswith(TOKEN_SUBPROTOCOL_PREFIX):
            return entry
    return None


class WebSocketServer:
    def __init__(
        self,
        app: Application,
        settings: Settings,
        metrics: Metrics,
        loop: asyncio.AbstractEventLoop,
        instance: str,
        *,
        policy: AccessPolicy | None = None,
        outbox: Outbox | None = None,
        http: HttpHandover | None = None,
        hooks: Hooks | None = None,
        send_budget: SendBudget | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.app = app
        # What the node holds for backed-up clients, shared with the HTTP API's connections.
        self.send_budget = (
            send_budget if send_budget is not None else new_send_budget(settings, metrics)
        )
        # With a connect hook, handshakes without a token are authenticated by the application.
        self.hooks = hooks if hooks is not None and hooks.authenticates else None
        self.deciding: set[asyncio.Task[None]] = set()
        self.settings = settings
        self.metrics = metrics
        self.loop = loop
        # The app passes what it shares with the HTTP side; unit tests may let it default.
        self.outbox = outbox or Outbox(loop, metrics)
        self.extensions = [server_deflate()] if settings.compression else None
        self.deflates = shared_deflates() if settings.compression else {}
        policy = policy or AccessPolicy.from_settings(settings)
        self.verifier = policy.verifier
        self.origins = policy.origins
        self.proxies = policy.proxies
        self.connections: set[Connection] = set()
        # The node's setups, shared with the event streams of the HTTP API (the app's).
        self.admission = admission or Admission.from_settings(settings)
        self.address_admission = AddressAdmission(
            settings.admission_per_address_rate_per_second, settings.admission_per_address_burst
        )
        # Bytes (and frames, through their overhead) of each client over all its connections;
        # a burst always holds the largest frame, or that frame could never be received.
        self.inbound = BucketPool(
            settings.client_receive_bytes_per_second,
            max(
                settings.client_receive_bytes_burst,
                settings.max_frame_bytes + FRAME_OVERHEAD_BYTES,
            ),
        )
        self.tokens: TokenClock[Connection] = TokenClock(
            loop, self._token_due, settings.token_refresh_notice, settings.auth_leeway
        )
        # The HTTP API sharing this port, if any: it takes the sockets whose request is for it.
        self.http = http
        if http is not None:
            http.charge_lingering = self.charge_lingering
        self._ids = itertools.count(1)
        self._id_prefix = f"{instance}-"
        self._server: asyncio.Server | None = None
        self.heartbeat: Heartbeat[Connection] = Heartbeat(
            loop, settings.ping_interval, self._check_alive
        )
        self._all_closed = asyncio.Event()
        self._all_closed.set()
        self.open_files = raise_open_files_limit()
        self.max_connections = connection_limit(settings.max_connections, self.open_files)
        # Sockets of every kind (see fd_limit.socket_limit): those accepted here and not yet
        # lost or handed to the HTTP API, plus the API's own.
        self.socket_limit = socket_limit(self.open_files, self.max_connections)
        self.accepted = 0
        self.metrics.connections_max.set(self.max_connections)
        self._full_logged = -1e9
        # Which refused handshakes get a log line, by error code, and which connections the
        # node closed, by cause: a client causes either at will (all are counted in metrics).
        self.refusals_logged = LogSampler()
        self.drops_logged = LogSampler()

    async def start(self, host: str, port: int) -> int:
        self._server = await self.loop.create_server(
            self._new_connection, host, port, backlog=LISTEN_BACKLOG, reuse_address=True
        )
        sockets = self._server.sockets
        for sock in sockets:
            # A quarter of the send bound (the kernel doubles it): 400 silent readers pinned
            # 1.3 GB of kernel memory autotuned; half a page (as HTTP's) left a reader that reads
            # too little slack for a room's bursts (it lagged past the history, then 1013). Set
            # on the listener, once: every accepted socket inherits it (the HTTP API's sockets
            # set their own on take-over).
            cap_socket_send_buffer(sock, self.settings.send_buffer_bytes // 4)
        self.heartbeat.start()
        return int(sockets[0].getsockname()[1]) if sockets else port

    def admit(
        self, request: Request, offered: Sequence[str], client_address: str
    ) -> Identity | Coroutine[None, None, Identity] | None:
        """Origin, then token (or the connect hook's call, to await); raises AuthError, so
        nothing is opened for a refused client.

        ``request`` passed check_request, which returned the ``offered`` subprotocols."""
        if not self.origins.allows(single_header(request.headers, "Origin")):
            raise AuthError(403, ErrorCode.ORIGIN, "origin not allowed")
        token = token_from_request(request.path, offered)
        if self.hooks is not None and (token is None or self.verifier is None):
            headers = {}
            for name in FORWARDED_HEADERS:
                values = request.headers.get_all(name)
                if values:  # a browser may split cookies over several Cookie headers
                    headers[name] = ("; " if name == "cookie" else ", ").join(values)
            return self.hooks.connect(client_address, request.path, headers)
        if self.verifier is None:
            return None
        if token is None:
            raise AuthError(
                401, ErrorCode.TOKEN_MISSING, "a token is required (?token= or subprotocol)"
            )
        return self.verifier.verify(token)

    def charge_lingering(self, client_key: str, size: int) -> bool:
        """Charge what a client sent after its connection ended to its receive budget, shared
        with its open connections; False once over it."""
        bucket = self.inbound.acquire(client_key)
        try:
            return bucket.allow(size)
        finally:
            self.inbound.release(client_key)

    def sockets_full(self) -> bool:
        http = self.http.open_sockets() if self.http is not None else 0
        return self.accepted + http > self.socket_limit

    def over_limit(self) -> None:
        self.metrics.connections_over_limit.inc()
        now = self.loop.time()
        if now - self._full_logged >= 10.0:  # once per episode, not once per client
            self._full_logged = now
            log.warning(
                "node full: refusing new handshakes with 503",
                extra={
                    "connections": len(self.connections),
                    "max_connections": self.max_connections,
                    "open_files_limit": self.open_files,
                },
            )

    def _new_connection(self) -> Connection:
        return Connection(self, f"{self._id_prefix}{next(self._ids):x}")

    def opened(self, conn: Connection) -> None:
        conn.opened = True
        self.connections.add(conn)
        self._all_closed.clear()
        self.metrics.connections_open.inc()
        self.metrics.connections_accepted.inc()
        self.tokens.track(conn)
        self.heartbeat.add(conn)
        conn.inbound = self.inbound.acquire(conn.client_key)

    def closed(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self.tokens.forget(conn)
        self.heartbeat.discard(conn)
        if conn.inbound is not None:
            self.inbound.release(conn.client_key)
        self.metrics.connections_open.dec()
        if not self.connections:
            self._all_closed.set()

    def _token_due(self, conn: Connection, kind: str) -> None:
        expires = conn.token_expires
        assert expires is not None
        if kind == NOTICE:
            closes = expires + self.settings.auth_leeway
            conn.send(token_expiring(int(expires * 1000), int(closes * 1000)))
            return
        self.app.on_rejected(conn, ErrorCode.TOKEN_EXPIRED)
        log_sampled(
            self.drops_logged,
            ErrorCode.TOKEN_EXPIRED,
            log,
            logging.INFO,
            "token expired; closing",
            {"connection": conn.id},
        )
        # fail, not close: nothing the client sends after this is handled any more.
        conn.fail(CloseCode.TOKEN_EXPIRED, "token expired; reconnect with a new one")

    def _check_alive(self, conn: Connection) -> None:
        # The article's heartbeat, one node-wide timer instead of a task per connection (and
        # spread over the interval, see heartbeat.py): a connection silent for a whole interval
        # after a ping (no pong, no frame) is dead.
        if not conn.alive:
            self.metrics.dead_connections_reaped.inc()
            log_sampled(
                self.drops_logged,
                "no_pong",
                log,
                logging.INFO,
                "no pong; closing dead connection",
                {"connection": conn.id},
            )
            conn.abort()
            return
        conn.alive = False
        conn.ping()

    async def drain(self, deadline: float) -> None:
        """Stop listening, send 1001 to everyone, wait until they are gone or time is up."""
        self.heartbeat.stop()
        self.tokens.stop()
        if self._server is not None:
            self._server.close()
        # Every message handled so far is answered before the 1001, and nothing is read after:
        # a message its client has no answer for at the close was never published, so it may
        # be sent again without a duplicate. Bounded: half the drain's time at most.
        for conn in list(self.connections):
            conn.hold_input()
        started = self.loop.time()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.app.answered(), deadline / 2)
        # What is still unanswered may yet run (a stalled Redis runs what waits in its socket
        # up to each script's deadline, after this node is gone): told so, not left silent.
        self.app.give_up_answers()
        deadline -= self.loop.time() - started
        for conn in list(self.connections):
            conn.close(CloseCode.GOING_AWAY, "server shutting down")
        try:
            await asyncio.wait_for(self._all_closed.wait(), deadline)
        except TimeoutError:
            log.warning("drain deadline reached", extra={"remaining": len(self.connections)})
        for conn in list(self.connections):
            conn.abort()
