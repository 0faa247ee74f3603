"""The smallest HTTP/1.1 client the server API needs: JSON in, JSON out, over asyncio and h11.

One connection per request (``Connection: close``): server API calls are rare next to chat
traffic, and a fresh connection never inherits a half-read answer after a timeout.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import h11
import orjson

MAX_ANSWER_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None


@dataclass(frozen=True, slots=True)
class Origin:
    """Where the API is: scheme, host, port and the path prefix before ``/api/``."""

    host: str
    port: int
    tls: bool
    prefix: str

    @classmethod
    def parse(cls, base_url: str) -> Origin:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be http(s)://host[:port][/prefix], not {base_url!r}")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        return cls(parts.hostname, port, tls, parts.path.rstrip("/"))

    @property
    def host_header(self) -> str:
        default = 443 if self.tls else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


def segment(value: str) -> str:
    """One path segment, percent-encoded (a user may hold any character)."""
    return quote(value, safe="")


async def exchange(
    origin: Origin,
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    body: Any,
    timeout: float,
    ssl_context: ssl.SSLContext | None,
) -> HttpAnswer:
    """One request (``body`` sent as JSON unless None) and its whole answer."""
    payload = b"" if body is None else orjson.dumps(body)
    sent = [
        ("Host", origin.host_header),
        ("Connection", "close"),
        ("Accept", "application/json"),
        *headers,
        ("Content-Length", str(len(payload))),
    ]
    if body is not None:
        sent.append(("Content-Type", "application/json"))
    context = ssl_context or (ssl.create_default_context() if origin.tls else None)
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(origin.host, origin.port, ssl=context)
        try:
            conn = h11.Connection(h11.CLIENT)
            request = h11.Request(method=method, target=origin.prefix + path, headers=sent)
            writer.write(conn.send(request) or b"")
            if payload:
                writer.write(conn.send(h11.Data(data=payload)) or b"")
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            await writer.drain()
            return await _answer(conn, reader)
        finally:
            writer.close()


async def _answer(conn: h11.Connection, reader: asyncio.StreamReader) -> HttpAnswer:
    status, got, chunks = 0, {}, bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
            got = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
        elif isinstance(event, h11.Data):
            chunks += event.data
            if len(chunks) > MAX_ANSWER_BYTES:
                raise ValueError("answer larger than the client accepts")
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return HttpAnswer(status, got, bytes(chunks))
