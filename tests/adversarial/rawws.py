"""A WebSocket client written from the RFC, so it can send what a compliant library refuses to.

Frames are built by hand (:func:`frame`: any opcode, FIN/RSV bits, masked or not, a lying length),
the handshake is raw bytes (duplicate or missing headers), and a reader task records every frame
the server sends, its close code, and when the socket ended, while the test floods.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from tests.adversarial.devcluster_shim import scaled
from tests.support.attacks import read_server_frame

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    mask: bool = True,
    rsv: int = 0,
    declared_length: int | None = None,
) -> bytes:
    """One frame, byte for byte; ``declared_length`` lies about the payload's size."""
    length = len(payload) if declared_length is None else declared_length
    head = bytearray([(0x80 if fin else 0) | (rsv & 0x7) << 4 | opcode])
    mask_bit = 0x80 if mask else 0
    if length < 126:
        head.append(mask_bit | length)
    elif length < 1 << 16:
        head.append(mask_bit | 126)
        head += struct.pack("!H", length)
    else:
        head.append(mask_bit | 127)
        head += struct.pack("!Q", length)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    size = len(payload)
    stream = (key * (size // 4 + 1))[:size]
    masked = (int.from_bytes(payload) ^ int.from_bytes(stream)).to_bytes(size)
    return bytes(head) + key + masked


def text(value: Any) -> bytes:
    """A masked text frame holding ``value`` as JSON (or as given, if already str/bytes)."""
    if isinstance(value, bytes):
        return frame(OP_TEXT, value)
    if isinstance(value, str):
        return frame(OP_TEXT, value.encode())
    return frame(OP_TEXT, json.dumps(value).encode())


def close_frame(code: int | None, reason: bytes = b"") -> bytes:
    payload = b"" if code is None else struct.pack("!H", code) + reason
    return frame(OP_CLOSE, payload)


class HandshakeRefused(Exception):
    def __init__(self, status: int, head: str, body: bytes) -> None:
        super().__init__(f"handshake refused with {status}: {head!r}")
        self.status = status
        self.head = head
        self.body = body


@dataclass
class Received:
    """What the server sent on one connection, recorded by the reader task."""

    texts: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    pongs: list[bytes] = field(default_factory=list)
    ended_at: float | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


def handshake_request(
    host: str,
    port: int,
    path: str = "/chat",
    headers: list[tuple[str, str]] | None = None,
    *,
    replace: bool = False,
) -> bytes:
    """The upgrade request; ``headers`` are added (duplicates kept) or, ``replace``, all of it."""
    base = [
        ("Host", f"{host}:{port}"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", base64.b64encode(os.urandom(16)).decode()),
        ("Sec-WebSocket-Version", "13"),
    ]
    lines = (headers or []) if replace else base + (headers or [])
    head = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in lines) + "\r\n"
    return head.encode("latin-1")


async def open_socket(
    host: str, port: int, *, rcvbuf: int | None = None, source: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection; ``rcvbuf`` shrinks SO_RCVBUF before connecting (a reader that lags);
    ``source`` is the local address (another client: any of 127.0.0.0/8 on loopback)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if source is not None:
        sock.bind((source, 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(loop.sock_connect(sock, (host, port)), scaled(10))
    return await asyncio.open_connection(sock=sock, limit=2**24)


async def read_head(reader: asyncio.StreamReader, timeout: float = 10) -> tuple[int, str]:
    """An HTTP response head: (status, the head's text)."""
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), scaled(timeout))
    head = raw.decode("latin-1")
    status = int(head.split(" ", 2)[1])
    return status, head


class RawWebSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.received = Received()
        self._task = asyncio.ensure_future(self._read_frames())

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        path: str = "/chat",
        headers: list[tuple[str, str]] | None = None,
        *,
        rcvbuf: int | None = None,
        welcome: bool = True,
        source: str | None = None,
    ) -> RawWebSocket:
        reader, writer = await open_socket(host, port, rcvbuf=rcvbuf, source=source)
        writer.write(handshake_request(host, port, path, headers))
        try:
            status, head = await read_head(reader)
        except BaseException:
            writer.close()
            raise
        if status != 101:
            body = b""
            with contextlib.suppress(TimeoutError, ConnectionError):
                body = await asyncio.wait_for(reader.read(4096), scaled(2))
            writer.close()
            raise HandshakeRefused(status, head, body)
        ws = cls(reader, writer)
        if welcome:
            first = await ws.next_text()
            assert first.get("type") == "welcome", first
        return ws

    @property
    def welcome(self) -> dict[str, Any]:
        return self.received.texts[0]

    async def _read_frames(self) -> None:
        reader, got = self.reader, self.received
        try:
            while True:
                first, payload = await read_server_frame(reader)
                opcode = first & 0x0F
                if opcode == OP_TEXT:
                    got.texts.append(json.loads(payload))
                    got.arrived.set()
                elif opcode == OP_PONG:
                    got.pongs.append(payload)
                    got.arrived.set()
                elif opcode == OP_CLOSE:
                    got.close_code = struct.unpack("!H", payload[:2])[0] if payload else 1005
                    got.close_reason = payload[2:].decode(errors="replace")
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        self.writer.write(close_frame(got.close_code))
                    break
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            got.ended_at = time.monotonic()
            got.ended.set()
            got.arrived.set()

    # Sending

    def send_bytes(self, data: bytes) -> bool:
        """Write raw bytes; False once the socket is gone."""
        if self.writer.is_closing() or self.received.ended.is_set():
            return False
        try:
            self.writer.write(data)
        except (ConnectionError, RuntimeError):
            return False
        return True

    async def send(self, value: Any) -> None:
        self.send_bytes(text(value))
        await self.drain()

    async def drain(self, timeout: float = 10) -> bool:
        try:
            await asyncio.wait_for(self.writer.drain(), scaled(timeout))
        except (ConnectionError, TimeoutError, RuntimeError):
            return False
        return not self.received.ended.is_set()

    # Receiving

    async def next_text(self, timeout: float = 10, **match: Any) -> dict[str, Any]:
        """The first recorded text event matching ``match`` (by field), waiting for it."""
        got = self.received
        async with asyncio.timeout(scaled(timeout)):
            while True:
                for event in got.texts:
                    if all(event.get(k) == v for k, v in match.items()):
                        return event
                if got.ended.is_set():
                    raise ConnectionError(f"closed ({got.close_code}) before {match}")
                got.arrived.clear()
                await got.arrived.wait()

    async def wait_closed(self, timeout: float = 10) -> int | None:
        """The close code the server sent (None: the socket ended without one)."""
        await asyncio.wait_for(self.received.ended.wait(), scaled(timeout))
        return self.received.close_code

    async def close(self) -> None:
        if not self.received.ended.is_set():
            self.send_bytes(close_frame(1000))
        self.writer.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(self._task, 1)
