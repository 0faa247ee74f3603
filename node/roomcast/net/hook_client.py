"""A small keep-alive HTTP/1.1 client on h11 for the application's hooks (POST JSON, read JSON).

Only the I/O: timeouts, retries and the breaker are the caller's (:mod:`roomcast.core.hooks`).
Connections are kept per origin and reused while fresh; one that failed, was cut by a timeout
(cancellation) or did not end its response cleanly is closed, never reused.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

import h11

from roomcast.core.hooks import HookCallFailed

# A pooled connection idle longer than this is closed rather than reused: servers drop idle
# keep-alive connections (uvicorn after 5 s, nginx after 75 s), and a request written into one
# that the server is closing fails after it was sent, which a publish must not retry.
IDLE_REUSE_SECONDS: Final = 2.0
_READ_BYTES: Final = 64 * 1024
_USER_AGENT: Final = b"roomcast-hooks"


@dataclass(frozen=True, slots=True)
class _Target:
    scheme: str
    host: str
    port: int
    path: bytes
    host_header: bytes


@dataclass(slots=True)
class _Link:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    http: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))
    idle_since: float = 0.0

    def close(self) -> None:
        self.writer.close()


class HookClient:
    def __init__(self, *, secret: str | None, max_response_bytes: int) -> None:
        self._secret = secret
        self._max_response = max_response_bytes
        self._targets: dict[str, _Target] = {}
        self._idle: dict[tuple[str, str, int], list[_Link]] = {}
        self._tls: ssl.SSLContext | None = None

    async def post(self, url: str, body: bytes) -> tuple[int, bytes]:
        target = self._target(url)
        link = self._pooled(target)
        if link is None:
            link = await self._connect(target)
        reusable = False
        try:
            status, answer = await self._exchange(link, target, body)
            # Only after a 200: a server that failed often drops the connection right after its
            # answer (uvicorn does, after an application error's 500), and the next request
            # written into it fails once sent, which a publish must not retry: one user's text
            # that the backend could not store made the next user's message fail too.
            reusable = status == 200
            return status, answer
        finally:
            http = link.http
            if reusable and http.our_state is h11.DONE and http.their_state is h11.DONE:
                http.start_next_cycle()
                link.idle_since = time.monotonic()
                self._idle.setdefault((target.scheme, target.host, target.port), []).append(link)
            else:
                link.close()

    def close(self) -> None:
        for links in self._idle.values():
            for link in links:
                link.close()
        self._idle.clear()

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            parts = urlsplit(url)  # validated by the settings
            assert parts.hostname is not None
            default = 443 if parts.scheme == "https" else 80
            port = parts.port or default
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            host = parts.hostname if port == default else f"{parts.hostname}:{port}"
            target = _Target(parts.scheme, parts.hostname, port, path.encode(), host.encode())
            self._targets[url] = target
        return target

    def _pooled(self, target: _Target) -> _Link | None:
        links = self._idle.get((target.scheme, target.host, target.port))
        now = time.monotonic()
        while links:
            link = links.pop()
            if now - link.idle_since <= IDLE_REUSE_SECONDS and _still_open(link):
                return link
            link.close()
        return None

    async def _connect(self, target: _Target) -> _Link:
        context = None
        if target.scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            context = self._tls
        try:
            reader, writer = await asyncio.open_connection(target.host, target.port, ssl=context)
        except (OSError, ssl.SSLError) as exc:
            # Nothing of the request left: safe to retry, whatever the hook.
            raise HookCallFailed(f"cannot connect: {exc}", sent=False) from None
        return _Link(reader, writer)

    async def _exchange(self, link: _Link, target: _Target, body: bytes) -> tuple[int, bytes]:
        http = link.http
        headers = [
            (b"host", target.host_header),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"user-agent", _USER_AGENT),
        ]
        if self._secret is not None:
            headers.append((b"authorization", b"Bearer " + self._secret.encode()))
        try:
            request = http.send(h11.Request(method=b"POST", target=target.path, headers=headers))
            payload = http.send(h11.Data(data=body))
            end = http.send(h11.EndOfMessage())
            assert request is not None and payload is not None and end is not None
            link.writer.write(request + payload + end)
            await link.writer.drain()
            return await self._response(link)
        except (OSError, ssl.SSLError, h11.ProtocolError) as exc:
            raise HookCallFailed(f"request failed: {exc}", sent=True) from None

    async def _response(self, link: _Link) -> tuple[int, bytes]:
        http = link.http
        status = 0
        chunks: list[bytes] = []
        size = 0
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                data = await link.reader.read(_READ_BYTES)
                http.receive_data(data)  # b"" is the end of the stream: h11 raises if early
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > self._max_response:
                    raise HookCallFailed(
                        f"answer larger than {self._max_response} bytes", sent=True
                    )
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return status, b"".join(chunks)
            elif isinstance(event, h11.ConnectionClosed):
                raise HookCallFailed("connection closed before the answer", sent=True)


def _still_open(link: _Link) -> bool:
    """Whether the server has not closed (or reset) the idle connection as far as we know: a
    request written into a closed one fails after it was sent, which a publish must not
    retry."""
    reader = link.reader
    return not (reader.at_eof() or reader.exception() is not None or link.writer.is_closing())
