"""A WebSocket server that says whatever a test wants: for attacking the Python client."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from tests.adversarial.rawws import OP_TEXT, frame

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

Script = Callable[[int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def server_text(value: Any) -> bytes:
    """An unmasked (server-side) text frame: JSON, or raw bytes/str as given."""
    if isinstance(value, bytes):
        payload = value
    elif isinstance(value, str):
        payload = value.encode()
    else:
        payload = json.dumps(value).encode()
    return frame(OP_TEXT, payload, mask=False)


class MaliciousServer:
    """Accepts every WebSocket handshake, then runs ``script(serial, reader, writer)``."""

    def __init__(self, script: Script) -> None:
        self._script = script
        self._server: asyncio.Server | None = None
        self.connections = 0
        self.port = 0

    async def __aenter__(self) -> MaliciousServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/chat"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            key = next(
                line.split(":", 1)[1].strip()
                for line in head.split("\r\n")
                if line.lower().startswith("sec-websocket-key:")
            )
            accept = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
            writer.write(
                (
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
                    "Sec-WebSocket-Protocol: roomcast\r\n\r\n"
                ).encode()
            )
            await self._script(self.connections, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
