"""The blackhole relay, against an echo server: silent while it lasts, then late delivery (hold)
or a reset connection (drop)."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator

import pytest

from tests.chaos.devtools import ManagedProcess, free_port, timeout_factor

SILENCE = 0.3  # seconds during which nothing may come back


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1024):
        writer.write(data)
        await writer.drain()
    writer.close()


@pytest.fixture
async def relay() -> AsyncIterator[tuple[ManagedProcess, int]]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    target = server.sockets[0].getsockname()[1]
    port = free_port()
    process = ManagedProcess(
        "relay", [sys.executable, "-m", "tests.chaos.relay", str(port), str(target)]
    )
    try:
        await asyncio.to_thread(process.wait_for_line, lambda line: "listening" in line, 10)
        yield process, port
    finally:
        process.stop()
        server.close()


async def switch(process: ManagedProcess, sig: int, line: str) -> None:
    process.signal(sig)
    await asyncio.to_thread(process.wait_for_line, lambda text: text == line, 5)


async def _roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(b"ping")
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(4), 5 * timeout_factor())


async def test_hold_is_silent_then_delivers_late(relay: tuple[ManagedProcess, int]) -> None:
    process, port = relay
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await _roundtrip(reader, writer) == b"ping"
    await switch(process, signal.SIGUSR1, "state 1 hold")
    writer.write(b"late")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readexactly(4), SILENCE)
    await switch(process, signal.SIGUSR2, "state 2 open")
    assert await asyncio.wait_for(reader.readexactly(4), 5 * timeout_factor()) == b"late"
    writer.close()


async def test_drop_is_silent_then_resets(relay: tuple[ManagedProcess, int]) -> None:
    process, port = relay
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await _roundtrip(reader, writer) == b"ping"
    await switch(process, signal.SIGHUP, "state 1 drop")
    writer.write(b"lost")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readexactly(4), SILENCE)
    await switch(process, signal.SIGUSR2, "state 2 open")
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(reader.readexactly(4), 5 * timeout_factor())
    # A new connection after the heal works again.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await _roundtrip(reader, writer) == b"ping"
    writer.close()
