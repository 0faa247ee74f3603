"""A WebSocket client written byte by byte on a plain stream, for tests that need what a library
client does not do: keep its socket open after its close frame, send bytes after it, read late."""

from __future__ import annotations

import asyncio
import os
import struct

import orjson

from tests.support.wsclient import scaled

# The client's close frame, code 1000, masked with a zero key (as in bench/setup_instructions.py).
CLOSE_FRAME = b"\x88\x82\0\0\0\0\x03\xe8"
# The node's echo: unmasked, the client's own code.
CLOSE_ECHO = b"\x88\x02\x03\xe8"


def text_frame(value: object) -> bytes:
    """``value`` as JSON in one masked text frame (zero key) under 126 bytes."""
    payload = orjson.dumps(value)
    assert len(payload) < 126
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + b"\0\0\0\0" + payload


def upgrade_request() -> bytes:
    key = os.urandom(16).hex()[:22] + "=="
    return (
        b"GET /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
        % key.encode()
    )


async def read_until(reader: asyncio.StreamReader, mark: bytes) -> bytes:
    """What the node sends up to and including ``mark`` (and the rest of that read)."""
    received = b""
    async with asyncio.timeout(scaled(10)):
        while mark not in received:
            chunk = await reader.read(65536)
            assert chunk, f"the node ended the stream before {mark!r}: {received[-200:]!r}"
            received += chunk
    return received


async def open_member(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, room: str, username: str
) -> None:
    """Upgrade the raw connection and join ``room`` as ``username``."""
    writer.write(upgrade_request())
    await read_until(reader, b'"welcome"')
    writer.write(text_frame({"type": "join", "room": room, "username": username}))
    await read_until(reader, b'"joined"')
