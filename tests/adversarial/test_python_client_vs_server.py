"""Beyond the issue: the Python client (roomcast.client) against a malicious or broken server.

Defended: no frame the server sends stops the client for good (a bad event is skipped or the link
is dropped and resumed), and what a server can make the client buffer for an application that
reads slowly is bounded."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

from roomcast.client import ChatMessage, Closed, RoomcastClient
from tests.adversarial.devcluster_shim import REPO_ROOT, scaled
from tests.adversarial.malicious_server import MaliciousServer, server_text
from tests.adversarial.observe import MIB, rss_bytes

JOINED = {"type": "joined", "room": "r", "username": "ann", "epoch": "e1", "offset": 0}
GOOD = {
    "type": "message", "room": "r", "username": "srv", "text": "after junk",
    "timestamp": 1, "offset": 1, "epoch": "e1",
}  # fmt: skip
JUNK: list[Any] = [
    b"not json",
    "[1, 2]",
    '"a string"',
    {"type": 5},
    {"type": "message", "room": "r", "username": None, "text": None, "offset": "x", "epoch": []},
    {
        "type": "message",
        "room": "r",
        "username": "x",
        "text": "t",
        "timestamp": "now",
        "offset": 10**30,
        "epoch": "e1",
    },
    {"type": "joined", "room": "r", "epoch": None, "offset": "zz"},
    {"type": "history", "room": "r", "epoch": "e1", "offset": 0, "messages": 5},
    {"type": "history", "room": "r", "epoch": "e1", "offset": 0, "messages": [None, 3]},
    {"type": "presence", "room": "r", "members": [{"username": 1}, None]},
    {"type": "ack", "id": {"a": 1}, "room": "r", "epoch": "e1", "offset": "y"},
    {"type": "error", "code": None, "reason": 7},
    {"type": "welcome", "node": None, "connection": 3},
]
# What a server may make a client that does not read its events hold: the events it keeps
# (bounded in count today, not in bytes) plus the socket's frames.
CLIENT_RSS_GROWTH_MIB = 64
FLOOD_SECONDS = 5.0
FLOOD_FRAME_BYTES = 1_000_000
# Enough to prove the point without starving the machine (706 MiB went through in 5 s before).
FLOOD_BYTES_MAX = 256 * MIB


async def _answer_joins(reader: asyncio.StreamReader) -> None:
    """Read and ignore the client's frames (its join, pings): the script does the talking."""
    while await reader.read(65536):
        pass


async def test_junk_from_the_server_never_stops_the_client() -> None:
    async def script(
        serial: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        drain = asyncio.ensure_future(_answer_joins(reader))
        writer.write(server_text({"type": "welcome", "node": "evil", "connection": f"c{serial}"}))
        writer.write(server_text(JOINED))
        if serial == 1:
            for junk in JUNK:
                writer.write(server_text(junk))
        writer.write(server_text(GOOD))
        await writer.drain()
        await drain

    async with MaliciousServer(script) as server:
        seen: list[str] = []
        async with RoomcastClient(server.url, "ann", rooms=["r"], ping_interval=None) as client:
            async with asyncio.timeout(scaled(10)):
                while True:
                    event = await client.next_event()
                    seen.append(type(event).__name__)
                    assert not isinstance(event, Closed), (
                        f"the client stopped: {event} after {seen}"
                    )
                    if isinstance(event, ChatMessage) and event.text == "after junk":
                        break
    print(f"client events through the junk: {seen}; connections {server.connections}")


async def test_a_server_cannot_make_a_non_reading_client_hoard_memory() -> None:
    pushed = 0

    async def script(
        serial: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        nonlocal pushed
        drain = asyncio.ensure_future(_answer_joins(reader))
        writer.write(server_text({"type": "welcome", "node": "evil", "connection": f"c{serial}"}))
        writer.write(server_text(JOINED))
        text = "x" * FLOOD_FRAME_BYTES
        offset = 0
        deadline = time.monotonic() + FLOOD_SECONDS
        while time.monotonic() < deadline and pushed < FLOOD_BYTES_MAX:
            offset += 1
            writer.write(server_text({**GOOD, "text": text, "offset": offset}))
            try:
                await asyncio.wait_for(writer.drain(), 0.5)
            except TimeoutError:
                continue  # the client stopped taking bytes: what we hope for
            pushed += FLOOD_FRAME_BYTES
        drain.cancel()

    async with MaliciousServer(script) as server:
        hoarder = subprocess.Popen(
            [sys.executable, "-m", "tests.adversarial.client_hoarder", server.url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
        )  # fmt: skip
        try:
            assert hoarder.stdout is not None
            assert hoarder.stdout.readline().strip() == "ready"
            before = rss_bytes(hoarder.pid)
            await asyncio.sleep(FLOOD_SECONDS + 1)
            growth = (rss_bytes(hoarder.pid) - before) / MIB
        finally:
            hoarder.kill()
            hoarder.wait(5)
    figures = (
        f"a server pushed {pushed / MIB:.0f} MiB at a client whose application does not read: "
        f"client RSS {growth:+.0f} MiB (bound {CLIENT_RSS_GROWTH_MIB})"
    )
    print(figures)
    assert growth < CLIENT_RSS_GROWTH_MIB, figures
