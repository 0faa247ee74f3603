"""Raw HTTP/1.1 for attacks: any header list (duplicates, forged X-Forwarded-For), answers read
whole, event streams read line by line, and requests whose answers are never read."""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from tests.adversarial.devcluster_shim import scaled
from tests.adversarial.rawws import open_socket


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def all_headers(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


def request_bytes(
    method: str,
    target: str,
    host: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    *,
    close: bool = True,
) -> bytes:
    lines = [("Host", host), *(headers or [])]
    if close:
        lines.append(("Connection", "close"))
    if body is not None:
        lines.append(("Content-Length", str(len(body))))
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in lines)
    return head.encode("latin-1") + b"\r\n" + (body or b"")


def parse_answer(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    answer = Answer(status, headers, body)
    if (answer.header("Transfer-Encoding") or "").lower() == "chunked":
        answer.body = _dechunk(body)
    return answer


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)


async def http(
    port: int,
    method: str,
    target: str,
    *,
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    json_body: Any = None,
    timeout: float = 10,
) -> Answer:
    """One request on its own connection, the whole answer (read until the server closes)."""
    if json_body is not None:
        body = json.dumps(json_body).encode()
        headers = [("Content-Type", "application/json"), *(headers or [])]
    reader, writer = await open_socket("127.0.0.1", port)
    try:
        writer.write(request_bytes(method, target, f"127.0.0.1:{port}", headers, body))
        raw = await asyncio.wait_for(reader.read(), scaled(timeout))
    finally:
        writer.close()
    return parse_answer(raw)


# Sent after each pipelined batch of :func:`flood`: nginx answers it itself ("ok"), unlimited,
# after every answer before it, so the batch is read whole when the stream ends with this one.
_END_OF_BATCH = b"GET /healthz HTTP/1.1\r\nHost: roomcast\r\n\r\n"
_END_OF_BATCH_ANSWER = b"\r\n\r\nok\n"


async def flood(
    port: int,
    request: bytes,
    deadline: float,
    origins: dict[str, int],
    *,
    connections: int,
    pipelined: int,
    statuses: dict[int, int] | None = None,
) -> None:
    """``connections`` keep-alive connections sending ``pipelined`` copies of ``request`` at once
    (HTTP/1.1 pipelining), again as soon as they are answered, until the deadline, connecting
    again whenever the connection is closed (as an attacker would). Counts who answered in
    ``origins``: "nginx" (its own 429), "node", or "closed" connections, and each answer's
    status in ``statuses``.

    The first batches are written with no await between them once every connection is open,
    and answers are counted in bulk, not parsed one by one: the server meets the first batches
    together and reads each next request without waiting for this process, whatever CPU this
    process gets (at idle priority on a busy machine, it may not run for seconds)."""
    batch = request * pipelined + _END_OF_BATCH
    counts = _Counts(origins, {} if statuses is None else statuses)
    opened = await asyncio.gather(*(open_socket("127.0.0.1", port) for _ in range(connections)))
    for _, writer in opened:
        writer.write(batch)
    await asyncio.gather(
        *(_go_on(port, batch, deadline, counts, *connection) for connection in opened)
    )


async def _go_on(
    port: int,
    batch: bytes,
    deadline: float,
    counts: _Counts,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    """Read the answers to the batch just sent, and send it again, until the deadline."""
    while True:
        try:
            while await _count_batch(reader, counts) and time.monotonic() < deadline:
                writer.write(batch)
        except (asyncio.IncompleteReadError, ConnectionError):
            counts.origins["closed"] += 1
        finally:
            writer.close()
        if time.monotonic() >= deadline:
            return
        reader, writer = await open_socket("127.0.0.1", port)
        writer.write(batch)


@dataclass
class _Counts:
    origins: dict[str, int]
    statuses: dict[int, int]


async def _count_batch(reader: asyncio.StreamReader, counts: _Counts) -> bool:
    """Read the answers to one batch of :func:`flood` and count them; False if the server closed
    the connection first (after ``Connection: close``, or a connection this process opened but
    wrote to only after nginx's 10 s header timeout): what was sent after goes unanswered."""
    status_lines = _Occurrences(re.compile(rb"HTTP/1\.1 ([0-9]{3})"), 12)
    refused = _Occurrences(re.compile(b"from your address"), 17)
    end = b""
    ended = False
    while not ended:
        chunk = await asyncio.wait_for(reader.read(1 << 16), scaled(10))
        if not chunk:
            break
        status_lines.feed(chunk)
        refused.feed(chunk)
        end = (end + chunk)[-len(_END_OF_BATCH_ANSWER) :]
        ended = end.endswith(_END_OF_BATCH_ANSWER)
    if ended:
        status_lines.found[-1:] = []  # the end of the batch's own "200"
    else:
        counts.origins["closed"] += 1
    for status in status_lines.found:
        counts.statuses[int(status)] = counts.statuses.get(int(status), 0) + 1
    counts.origins["nginx"] += len(refused.found)
    counts.origins["node"] += len(status_lines.found) - len(refused.found)
    return ended


class _Occurrences:
    """The matches of ``pattern``, always ``length`` bytes long, in a stream fed in chunks split
    anywhere (the first group of each, or the whole match)."""

    def __init__(self, pattern: re.Pattern[bytes], length: int) -> None:
        self.pattern = pattern
        self.found: list[bytes] = []
        # Shorter than a match: none lies within it, none is found twice.
        self._keep = length - 1
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        data = self._tail + chunk
        self.found += (m.group(m.lastindex or 0) for m in self.pattern.finditer(data))
        self._tail = data[-self._keep :]


async def unread_request(
    port: int, target: str, *, rcvbuf: int = 4096
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Send a GET and never read its answer (a tiny receive buffer, so the server's side fills)."""
    reader, writer = await open_socket("127.0.0.1", port, rcvbuf=rcvbuf)
    writer.write(request_bytes("GET", target, f"127.0.0.1:{port}", close=False))
    await writer.drain()
    # Left alone, asyncio would read the answer into the StreamReader (up to twice its 16 MiB
    # limit) whatever the receive buffer: the attacker would be a reader that reads.
    transport = writer.transport
    assert isinstance(transport, asyncio.ReadTransport)
    transport.pause_reading()
    return reader, writer


@dataclass
class EventStreamReader:
    """An SSE stream read line by line: the events' JSON in order, and whether it ended."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    status: int
    events: list[dict[str, Any]] = field(default_factory=list)
    ended: bool = False
    # The last ``id:`` seen, as EventSource keeps it (and sends it back as Last-Event-ID).
    last_event_id: str | None = None

    @classmethod
    async def open(
        cls,
        port: int,
        target: str,
        headers: list[tuple[str, str]] | None = None,
        source: str | None = None,
    ) -> EventStreamReader:
        """``source``: the local address (another client: any of 127.0.0.0/8 on loopback)."""
        reader, writer = await open_socket("127.0.0.1", port, source=source)
        sent = [("Accept", "text/event-stream"), *(headers or [])]
        writer.write(request_bytes("GET", target, f"127.0.0.1:{port}", sent, close=False))
        raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), scaled(10))
        status = int(raw.split(b" ", 2)[1])
        return cls(reader, writer, status)

    async def next_event(self, timeout: float = 10) -> dict[str, Any]:
        """The next ``data:`` line's JSON (chunk-size lines and comments skipped)."""
        async with asyncio.timeout(scaled(timeout)):
            while True:
                line = await self.reader.readline()
                if not line:
                    self.ended = True
                    raise EOFError("the stream ended")
                if line.startswith(b"id: "):
                    self.last_event_id = line[4:].strip().decode()
                if line.startswith(b"data: "):
                    event: dict[str, Any] = json.loads(line[6:])
                    self.events.append(event)
                    return event

    def close(self) -> None:
        self.writer.close()
