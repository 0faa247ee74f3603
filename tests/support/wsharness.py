"""Drive real server Connections without sockets.

A :class:`FakeTransport` stands in for the asyncio transport; a websockets sans-I/O
``ClientProtocol`` produces the client's handshake and masked frames and parses what the server
wrote. Nothing binds a port and nothing sleeps.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any, cast

import orjson
from prometheus_client import CollectorRegistry
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from roomcast.net.transport import Application, Connection, WebSocketServer
from roomcast.runtime.config import Settings
from roomcast.runtime.metrics import Metrics

PEER = ("127.0.0.1", 1234)

BASE_SETTINGS = Settings(node_id="test-node")
INSTANCE = "test-node-abc123"
# A user_id: 128 bits in URL-safe base64 without padding (core.user_ids).
USER_ID = re.compile(r"[A-Za-z0-9_-]{22}")


def make_settings(**overrides: Any) -> Settings:
    return replace(BASE_SETTINGS, **overrides)


class FakeTransport:
    """Just enough of asyncio.Transport for Connection."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.write_buffer_size = 0
        self.closed = False
        self.eof_written = False
        self.supports_eof = True
        self.aborted = False
        self.paused = False
        self.pause_calls = 0
        self.resume_calls = 0
        self.writes = 0
        self.high_water: int | None = None  # None: the transport's default (64 KiB)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high_water = high

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.written.append(bytes(data))

    def writelines(self, pieces: list[bytes]) -> None:
        """One gathered write (uvloop: one writev call), like the real transport's."""
        self.writes += 1
        self.written.append(b"".join(pieces))

    def close(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return self.supports_eof

    def write_eof(self) -> None:
        assert self.supports_eof
        self.eof_written = True

    @property
    def ended(self) -> bool:
        """The server ended its side of the stream (half-close or close)."""
        return self.closed or self.eof_written or self.aborted

    def abort(self) -> None:
        self.aborted = True

    def pause_reading(self) -> None:
        self.paused = True
        self.pause_calls += 1

    def resume_reading(self) -> None:
        self.paused = False
        self.resume_calls += 1

    def get_write_buffer_size(self) -> int:
        return self.write_buffer_size

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return PEER if name == "peername" else default

    def take(self) -> bytes:
        data = b"".join(self.written)
        self.written.clear()
        return data


class RecordingApp:
    """An Application that records every call; ``block`` makes on_text return a future."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.texts: list[str] = []
        self.rejected: list[str] = []
        self.opened: list[Connection] = []
        self.closed: list[Connection] = []
        self.block: dict[str, asyncio.Future[None]] = {}

    def on_open(self, conn: Connection) -> None:
        self.calls.append(("open", conn.id))
        self.opened.append(conn)

    def on_text(self, conn: Connection, text: str) -> Awaitable[None] | None:
        self.calls.append(("text", text))
        self.texts.append(text)
        return self.block.get(text)

    def on_close(self, conn: Connection) -> None:
        self.calls.append(("close", conn.id))
        self.closed.append(conn)

    def on_rejected(self, conn: Connection, code: str) -> None:
        self.calls.append(("rejected", code))
        self.rejected.append(code)

    def on_lagging(self, conn: Connection) -> bool:
        self.calls.append(("lagging", conn.id))
        return False  # drop it, as a slow consumer

    def on_drained(self, conn: Connection) -> None:
        self.calls.append(("drained", conn.id))

    async def answered(self) -> None:
        """Nothing is ever left unanswered here (on_text answers nothing)."""

    def give_up_answers(self) -> None:
        self.calls.append(("gave up answers", ""))


def make_server(
    app: Application, settings: Settings | None = None, registry: CollectorRegistry | None = None
) -> WebSocketServer:
    metrics = Metrics(registry if registry is not None else CollectorRegistry())
    loop = asyncio.get_running_loop()
    return WebSocketServer(app, settings or BASE_SETTINGS, metrics, loop, INSTANCE)


class WsClient:
    """One client talking to one server Connection through a FakeTransport."""

    def __init__(self, server: WebSocketServer, path: str = "/chat", compress: bool = False):
        self.server = server
        self.transport = FakeTransport()
        self.conn: Connection = server._new_connection()
        self.conn.connection_made(cast(asyncio.BaseTransport, self.transport))
        extensions = [ClientPerMessageDeflateFactory()] if compress else None
        self.proto = ClientProtocol(parse_uri(f"ws://testserver{path}"), extensions=extensions)
        self.proto.send_request(self.proto.connect())
        self.frames: list[Frame] = []
        self.responses: list[Response] = []
        self.push()
        self.pull()
        assert len(self.responses) == 1, self.responses
        self.response = self.responses[0]

    # client → server

    def push(self) -> None:
        """Deliver everything the client queued as one read on the server side."""
        data = b"".join(self.proto.data_to_send())
        if data:
            self.conn.data_received(data)

    def send_text(self, text: str | bytes, *, push: bool = True) -> None:
        self.proto.send_text(text.encode() if isinstance(text, str) else text)
        if push:
            self.push()

    def send_json(self, value: Any, *, push: bool = True) -> None:
        self.send_text(orjson.dumps(value), push=push)

    def send_binary(self, data: bytes, *, push: bool = True) -> None:
        self.proto.send_binary(data)
        if push:
            self.push()

    # server → client

    def pull(self) -> None:
        data = self.transport.take()
        if data:
            self.proto.receive_data(data)
        for event in self.proto.events_received():
            if isinstance(event, Frame):
                self.frames.append(event)
            elif isinstance(event, Response):
                self.responses.append(event)

    def received(self) -> list[Frame]:
        """Frames the server wrote since the last call."""
        self.pull()
        frames, self.frames = self.frames, []
        return frames

    def events(self, user_ids: bool = False) -> list[dict[str, Any]]:
        """JSON events (text frames) the server wrote since the last call. The ``user_id`` of
        events about a user is checked to be one (core.user_ids) and left out, so that frames
        compare as the article's; ``user_ids``: kept (tests/unit/test_user_ids.py)."""
        events = []
        for frame in self.received():
            if frame.opcode is Opcode.TEXT:
                event = orjson.loads(frame.data)
                if not user_ids:
                    _leave_out_user_ids(event)
                events.append(event)
            else:
                assert frame.opcode in (Opcode.CLOSE, Opcode.PONG), frame
        return events

    @property
    def close_code(self) -> int | None:
        self.pull()
        close = self.proto.close_rcvd
        return None if close is None else int(close.code)

    @property
    def close_reason(self) -> str | None:
        self.pull()
        close = self.proto.close_rcvd
        return None if close is None else close.reason

    def disconnect(self) -> None:
        """The socket goes away (what asyncio calls after transport.close/abort or a reset)."""
        self.conn.connection_lost(None)


def _leave_out_user_ids(event: dict[str, Any]) -> None:
    """Without the user_id of an event and of the messages it holds (history), and the user_ids
    of a presence answer's members, once checked."""
    for item in [event, *event.get("messages", ())]:
        if isinstance(item, dict) and "user_id" in item:
            user_id = item.pop("user_id")
            assert isinstance(user_id, str) and USER_ID.fullmatch(user_id), item
    members = event.get("members") if event.get("type") == "presence" else None
    for member in members or ():
        held = member.pop("user_ids")
        assert all(USER_ID.fullmatch(user_id) for user_id in held), member
        assert sum(held.values()) == member["connections"], member


async def settle(turns: int = 10) -> None:
    """Run a few loop turns: broker delivery, join tasks and outbox flushes use call_soon."""
    for _ in range(turns):
        await asyncio.sleep(0)
