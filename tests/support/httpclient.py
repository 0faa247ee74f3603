"""HTTP test clients for the API: one-shot requests, and an event-stream reader (h11)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import h11

from tests.support.wsclient import scaled


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def _open(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str, str]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(parts.hostname, parts.port), scaled(10)
    )
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    return reader, writer, f"{parts.hostname}:{parts.port}", target


def _headers(event: h11.Response) -> dict[str, str]:
    return {k.decode().lower(): v.decode() for k, v in event.headers}


async def request(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    json_body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> Response:
    """One request on its own connection; the whole answer."""
    if json_body is not None:
        body = json.dumps(json_body).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
    reader, writer, host, target = await _open(url)
    conn = h11.Connection(h11.CLIENT)
    sent = [("Host", host), ("Connection", "close"), *(headers or {}).items()]
    if body is not None:
        sent.append(("Content-Length", str(len(body))))
    try:
        writer.write(conn.send(h11.Request(method=method, target=target, headers=sent)) or b"")
        if body is not None:
            writer.write(conn.send(h11.Data(data=body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        status, got, chunks = 0, {}, bytearray()
        async with asyncio.timeout(scaled(timeout)):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Response):
                    status, got = event.status_code, _headers(event)
                elif isinstance(event, h11.Data):
                    chunks += event.data
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    return Response(status, got, bytes(chunks))
    finally:
        writer.close()


@dataclass
class ServerEvent:
    id: int | None  # the offset of the event's id (<epoch>:<offset>)
    data: Any  # the JSON of the data lines
    raw_id: str | None = None  # the id line as EventSource keeps it (its Last-Event-ID)


@dataclass
class EventStream:
    """An open ``text/event-stream`` response, read event by event."""

    status: int
    headers: dict[str, str]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    conn: h11.Connection
    comments: int = 0
    ended: bool = False
    _text: str = ""
    _ready: list[ServerEvent] = field(default_factory=list)

    @classmethod
    async def open(cls, url: str, headers: dict[str, str] | None = None) -> EventStream:
        reader, writer, host, target = await _open(url)
        conn = h11.Connection(h11.CLIENT)
        sent = [("Host", host), ("Accept", "text/event-stream"), *(headers or {}).items()]
        writer.write(conn.send(h11.Request(method="GET", target=target, headers=sent)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        async with asyncio.timeout(scaled(10)):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Response):
                    return cls(event.status_code, _headers(event), reader, writer, conn)

    @property
    def node(self) -> str:
        return self.headers.get("x-roomcast-node", "")

    async def next(self, timeout: float = 10) -> ServerEvent:
        """The next event with data (comments and ``retry:`` are counted or skipped)."""
        async with asyncio.timeout(scaled(timeout)):
            while not self._ready:
                if self.ended:
                    raise EOFError("the stream ended")
                try:
                    event = self.conn.next_event()
                except h11.RemoteProtocolError:
                    # The connection dropped mid-stream (a node killed behind nginx).
                    self.ended = True
                    continue
                if event is h11.NEED_DATA:
                    data = await self.reader.read(65536)
                    self.conn.receive_data(data)
                elif isinstance(event, h11.Data):
                    self._feed(bytes(event.data).decode())
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    self.ended = True
        return self._ready.pop(0)

    async def heartbeat(self, timeout: float = 10) -> None:
        """Wait for one more comment line (the server's heartbeat); events read meanwhile are
        kept for :meth:`next`."""
        seen = self.comments
        async with asyncio.timeout(scaled(timeout)):
            while self.comments == seen:
                if self.ended:
                    raise EOFError("the stream ended")
                await self._read_more()

    async def _read_more(self) -> None:
        data = await self.reader.read(65536)
        if not data:
            self.ended = True
        self.conn.receive_data(data)
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError:
                self.ended = True
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Data):
                self._feed(bytes(event.data).decode())
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                self.ended = True
                return

    async def next_type(self, kind: str, timeout: float = 10) -> ServerEvent:
        async with asyncio.timeout(scaled(timeout)):
            while True:
                event = await self.next(timeout)
                if event.data.get("type") == kind:
                    return event

    def _feed(self, text: str) -> None:
        self._text += text
        while "\n\n" in self._text:
            block, self._text = self._text.split("\n\n", 1)
            event_id: int | None = None
            raw_id: str | None = None
            data: list[str] = []
            for line in block.split("\n"):
                if line.startswith(":"):
                    self.comments += 1
                elif line.startswith("id: "):
                    raw_id = line[4:]
                    event_id = int(raw_id.rpartition(":")[2])
                elif line.startswith("data: "):
                    data.append(line[6:])
            if data:
                body = json.loads("\n".join(data))
                self._ready.append(ServerEvent(event_id, body, raw_id))

    def close(self) -> None:
        self.writer.close()
