"""A few lines of asyncio + h11 (roomcast's own dependency): one-shot requests and a line stream.

The example keeps to what roomcast already installs; a real application would use its usual
HTTP client (httpx, aiohttp) or ``roomcast.admin``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import h11

_READ = 64 * 1024


async def _open(
    url: str, method: str, headers: dict[str, str], body: bytes | None
) -> tuple[h11.Connection, asyncio.StreamReader, asyncio.StreamWriter, h11.Response]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    port = parts.port or 80
    reader, writer = await asyncio.open_connection(parts.hostname, port)
    http = h11.Connection(h11.CLIENT)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    sent = [("host", f"{parts.hostname}:{port}"), ("connection", "close")]
    sent += list(headers.items())
    if body is not None:
        sent.append(("content-length", str(len(body))))
    data = http.send(h11.Request(method=method, target=target, headers=sent)) or b""
    if body is not None:
        data += http.send(h11.Data(data=body)) or b""
    data += http.send(h11.EndOfMessage()) or b""
    writer.write(data)
    await writer.drain()
    while True:
        event = http.next_event()
        if event is h11.NEED_DATA:
            http.receive_data(await reader.read(_READ))
        elif isinstance(event, h11.Response):
            return http, reader, writer, event
        elif isinstance(event, h11.ConnectionClosed):
            raise ConnectionError("closed before the response")


async def request(
    url: str, method: str = "GET", headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, bytes]:
    http, reader, writer, response = await _open(url, method, headers or {}, body)
    chunks: list[bytes] = []
    try:
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                http.receive_data(await reader.read(_READ))
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return response.status_code, b"".join(chunks)
    finally:
        writer.close()


async def stream_lines(url: str, headers: dict[str, str]) -> AsyncIterator[str]:
    """The lines of a streamed response (Server-Sent Events); raises if not 200."""
    http, reader, writer, response = await _open(url, "GET", headers, None)
    try:
        if response.status_code != 200:
            raise ConnectionError(f"HTTP {response.status_code}")
        pending = b""
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                http.receive_data(await reader.read(_READ))
            elif isinstance(event, h11.Data):
                pending += bytes(event.data)
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.decode().rstrip("\r")
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return
    finally:
        writer.close()
