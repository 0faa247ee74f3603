"""What an attacker sends, byte for byte: raw WebSocket handshakes and frames over TCP (no client
library that would refuse to send them), and a bystander that measures its round trips."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import statistics
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Final

from websockets.frames import Opcode

from tests.support.wsclient import Client, scaled

TEXT: Final = Opcode.TEXT.value
CONT: Final = Opcode.CONT.value
PING: Final = Opcode.PING.value
PONG: Final = Opcode.PONG.value


def frame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """A masked client frame (payload under 64 KiB)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    length = len(payload)
    head += (
        bytes([0x80 | length]) if length < 126 else bytes([0x80 | 126]) + struct.pack("!H", length)
    )
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def handshake(path: str = "/chat", headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def read_server_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One frame from a server (unmasked): its first byte (FIN, RSV bits, opcode) and payload."""
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    return first, await reader.readexactly(length)


@dataclass
class RawConnection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    status: int
    head: bytes

    @classmethod
    async def open(cls, port: int, request: bytes) -> RawConnection:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), scaled(5)
        )
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), scaled(5))
        return cls(reader, writer, int(head[9:12]), head)

    async def next_frame(self) -> tuple[int, bytes]:
        first, payload = await read_server_frame(self.reader)
        return first & 0x0F, payload

    async def close_code(self) -> int | None:
        """Read until the server's close frame (its code) or the end of the stream (None)."""
        try:
            while True:
                opcode, payload = await self.next_frame()
                if opcode == Opcode.CLOSE.value:
                    return int(struct.unpack("!H", payload[:2])[0]) if payload else None
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    def abort(self) -> None:
        self.writer.transport.abort()


@dataclass
class FloodReport:
    connections: int = 0
    frames_sent: int = 0
    unfinished: int = 0  # the last connection, when the time ran out before it was closed
    close_codes: list[int | None] = field(default_factory=list)


async def flood(
    port: int, request: bytes, opener: bytes, unit: bytes, seconds: float
) -> FloodReport:
    """Connect, send ``opener`` then ``unit`` as fast as the socket takes it, until the server
    closes; again with a new connection until ``seconds`` are up."""
    report = FloodReport()
    chunk_units = max(1, 65536 // len(unit))
    chunk = unit * chunk_units
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        conn = await RawConnection.open(port, request)
        assert conn.status == 101, conn.head
        report.connections += 1
        closing = asyncio.ensure_future(conn.close_code())
        conn.writer.write(opener)
        try:
            while not closing.done() and time.monotonic() < deadline:
                conn.writer.write(chunk)
                report.frames_sent += chunk_units
                await conn.writer.drain()
        except ConnectionError:
            pass
        if closing.done() or time.monotonic() < deadline:
            try:
                report.close_codes.append(await asyncio.wait_for(closing, scaled(5)))
            except TimeoutError:
                report.close_codes.append(None)
        else:
            closing.cancel()  # the time was up before the server had seen enough of it
            report.unfinished += 1
        conn.abort()
    return report


@dataclass
class RoundTrips:
    """A bystander's presence round trips (a Redis round trip each), in milliseconds."""

    client: Client
    room: str
    samples: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    async def measure_until(self, stop: asyncio.Event) -> None:
        request = 0
        while not stop.is_set():
            request += 1
            started = time.perf_counter()
            await self.client.send(type="presence", room=self.room, id=request)
            reply = await self.client.recv_type("presence", timeout=15, id=request)
            self.samples.append((time.perf_counter() - started) * 1000)
            if reply.get("type") != "presence":
                self.failures.append(str(reply))
            await asyncio.sleep(0.025)  # within the frame budget (50/s) of a connection

    def summary(self) -> str:
        if not self.samples:
            return "no samples"
        ordered = sorted(self.samples)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return (
            f"{len(ordered)} round trips: median {statistics.median(ordered):.1f} ms, "
            f"p99 {p99:.1f} ms, max {ordered[-1]:.1f} ms"
        )

    def assert_few_milliseconds(self) -> None:
        assert self.samples, "the bystander measured nothing"
        assert not self.failures, self.failures
        ordered = sorted(self.samples)
        # A few milliseconds on loopback; the ceiling leaves room for a loaded 2-core machine
        # (scaled by ROOMCAST_TEST_TIMEOUT_FACTOR), far below the 12.7 s of issue 15.
        assert statistics.median(ordered) < scaled(15), self.summary()
        assert ordered[-1] < scaled(150), self.summary()


FLOOD_UNITS: Final = {
    # kind: (sent once after the handshake, then repeated)
    "continuations": (frame(TEXT, b"[", fin=False), frame(CONT, fin=False)),
    "pongs": (b"", frame(PONG)),
    "pings": (b"", frame(PING)),
}


async def flood_in_another_process(port: int, kind: str, token: str, seconds: float) -> FloodReport:
    """The flood from its own process, so that the bystander's round trips measure the node,
    not the attacker's loop sharing the test's."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.attacks", str(port), kind, token, str(seconds),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(child.communicate(), scaled(seconds + 30))
    assert child.returncode == 0, out
    return FloodReport(**json.loads(out))


def _main(argv: list[str]) -> None:
    port, kind, token, seconds = int(argv[0]), argv[1], argv[2], float(argv[3])
    opener, unit = FLOOD_UNITS[kind]
    request = handshake(headers=(("Sec-WebSocket-Protocol", f"roomcast, roomcast.token.{token}"),))
    report = asyncio.run(flood(port, request, opener, unit, seconds))
    print(json.dumps(dataclasses.asdict(report)))


if __name__ == "__main__":
    _main(sys.argv[1:])
