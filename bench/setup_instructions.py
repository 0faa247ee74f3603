"""CPU of the node's own work for a connection setup and for a delivery, without sockets: the
real transport and Node (memory broker) fed raw client bytes through a stand-in transport, so
what is timed is everything the node does above the socket calls themselves (accept, read and
write are ``bench/setup_cost.py``'s business, on a real node).

Run: ``.venv/bin/python bench/setup_instructions.py [--count 3000]``; prints CPU µs per
handshake (request → 101 + welcome queued and flushed), per join (join frame → ``joined`` to the
joiner and ``user_joined`` to the room's one other member), per delivery (one message
fanned out to 33 members, a node's share of a 100-member room; ``--room-size`` for another)
and per close (a joined client's close frame → the node's close frame and end of stream, the
client's end of stream, the connection lost → ``user_left`` to the room's one other member). Under
``valgrind --tool=callgrind`` the same parts are counted in instructions, which do not move
with the load of a shared machine:

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=math_fsum \
        --dump-after=math_prod --callgrind-out-file=/tmp/setup.%p \
        .venv/bin/python bench/setup_instructions.py --count 200

writes one file per part (/tmp/setup.PID.1 to .5: idle, handshake, join, delivery, close) whose
``totals:`` line counts that part's measured windows alone (each runs inside ``math.fsum``; the
file is written when the part ends, in ``math.prod``). Subtract the idle part's total (an empty
window: what running the loop for a window costs), then divide by the count (for a delivery, by
33 times the count: each message is 33 deliveries; ``bench/fanout_instructions.py`` does all
of this at two room sizes and splits a delivery into its part per message and per recipient).
The set-up of each window (anchors, members, frames) is left out; a window ends when its last
frame was written (a join's ``user_joined`` to the other member, a close's ``user_left``).

``--redis`` runs the same parts on the Redis broker instead (a redis-server of its own on
loopback, started and stopped here, ``--redis-port`` to choose its port): a join then costs its
script's request and reply, the node's room list, the room index and the joiner's own
``user_joined`` read back from the subscription, as on a real node (the sockets stay stand-ins,
so the kernel's share is still ``bench/setup_cost.py``'s). Each wait is then for the frame
itself (a future the stand-in transport resolves), not loop turns, so the count does not grow
with how long Redis takes to answer.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import struct
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
import uvloop
from prometheus_client import CollectorRegistry
from roomcast_dev.devcluster import LocalCluster

from roomcast.broker import Broker, HistoryLimits
from roomcast.broker.memory import MemoryBroker
from roomcast.broker.redis import RedisBroker
from roomcast.core.node import Node
from roomcast.net.transport import Connection, WebSocketServer
from roomcast.runtime.metrics import Metrics
from tests.support.wsharness import INSTANCE, FakeTransport, make_settings

ROOM_SIZE = 33
OFF = 1_000_000.0
REQUEST = (
    b"GET /chat HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
# A client's close frame, code 1000, mask key 0.
CLOSE_FRAME = b"\x88\x82\0\0\0\0\x03\xe8"


def masked(value: object) -> bytes:
    """A client text frame (mask key 0: the payload is sent as is)."""
    payload = orjson.dumps(value)
    if len(payload) < 126:
        return struct.pack("!BB", 0x81, 0x80 | len(payload)) + b"\0\0\0\0" + payload
    return struct.pack("!BBH", 0x81, 0x80 | 126, len(payload)) + b"\0\0\0\0" + payload


async def turns(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


class WatchedTransport(FakeTransport):
    """A stand-in transport that resolves a future when a write holds the awaited mark."""

    def __init__(self) -> None:
        super().__init__()
        self.mark = b""
        self.seen: asyncio.Future[None] | None = None

    def write(self, data: bytes) -> None:
        super().write(data)
        self._check()

    def writelines(self, pieces: list[bytes]) -> None:
        super().writelines(pieces)
        self._check()

    def _check(self) -> None:
        seen = self.seen
        if seen is not None and not seen.done() and self.mark in self.written[-1]:
            seen.set_result(None)


class BareTransport(FakeTransport):
    """A stand-in whose ``write`` and ``get_write_buffer_size`` are C calls (``list.append``,
    ``int()``), as uvloop's are: what a recipient costs is then the node's code alone, not a
    Python stand-in's two calls per delivery."""

    def __init__(self) -> None:
        super().__init__()
        self.write = self.written.append  # type: ignore[method-assign,assignment]
        self.get_write_buffer_size = int  # type: ignore[method-assign]


async def until(transport: FakeTransport, mark: bytes, limit: int = 10_000) -> None:
    """Until ``transport`` got a frame holding ``mark``: loop turns (bounded), or, on a
    :class:`WatchedTransport`, the write itself (within 10 s)."""
    if isinstance(transport, WatchedTransport):
        if any(mark in data for data in transport.written):
            return
        transport.mark = mark
        transport.seen = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(transport.seen, 10.0)
        finally:
            transport.seen = None
        return
    for _ in range(limit):
        if any(mark in data for data in transport.written):
            return
        await asyncio.sleep(0)
    raise RuntimeError(f"no {mark!r} after {limit} loop turns")


class Bench:
    def __init__(self, server: WebSocketServer, broker: Broker, watched: bool) -> None:
        self.server = server
        self.broker = broker
        self.watched = watched
        self.room_size = ROOM_SIZE

    @classmethod
    async def start(cls, redis_url: str | None = None) -> Bench:
        metrics = Metrics(CollectorRegistry())
        # The per-client limits off, as in make bench (one client sends a lot here).
        settings = make_settings(
            rate_limit_per_second=OFF,
            rate_limit_burst=int(OFF),
            client_receive_bytes_per_second=2**40,
            client_receive_bytes_burst=2**40,
            # Handshake admission off, as in make bench's connect scenario.
            admission_rate_per_second=1e9,
            admission_burst=10**9,
            admission_per_address_rate_per_second=1e9,
            admission_per_address_burst=10**9,
            # The heartbeat's rounds made rare: under callgrind a part takes minutes, and a
            # round (pings to every open connection, spread over the interval) would land in
            # the measured windows and blur the counts.
            ping_interval=3600.0,
        )
        off = (OFF, int(OFF))
        node = Node(
            settings.node_id,
            settings.max_rooms_per_connection,
            settings.max_frame_bytes,
            metrics,
            settings.history_size,
            message_rate=off,
            join_rate=off,
            client_message_rate=off,
            client_join_rate=off,
            room_message_rate=off,
            lag_timeout=settings.lag_timeout,
        )
        limits = HistoryLimits(size=100)
        broker: MemoryBroker | RedisBroker
        if redis_url is None:
            broker = MemoryBroker(node.on_broker_message, limits=limits)
        else:
            # The watchdog's and the heartbeat's rounds made rare: they would land in the
            # measured windows (a callgrind run takes minutes) and blur the counts.
            broker = RedisBroker(
                redis_url,
                node.on_broker_message,
                limits=limits,
                room_message_rate=off,
                timeout=30.0,
                presence_ttl=3600.0,
            )
        await broker.start()
        for _ in range(1000):  # the control channel subscribed, the links up
            if broker.ready:
                break
            await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        server = WebSocketServer(node, settings, metrics, loop, INSTANCE)
        node.attach(broker, server.outbox)
        return cls(server, broker, redis_url is not None)

    def open(self, bare: bool = False) -> tuple[Connection, FakeTransport]:
        if bare:
            transport: FakeTransport = BareTransport()
        else:
            transport = WatchedTransport() if self.watched else FakeTransport()
        conn = self.server._new_connection()
        conn.connection_made(cast(asyncio.BaseTransport, transport))
        conn.data_received(REQUEST)
        return conn, transport

    # Each part is an async generator of its measured windows: what runs before a window is
    # yielded (anchors, members, frames) is set-up, left out of the counts (see measure).

    async def idles(self, count: int) -> Windows:
        """Empty windows: what measuring one costs (a loop run), to subtract from the rest."""
        for _ in range(count):
            yield turns(0)

    async def handshakes(self, count: int) -> Windows:
        for _ in range(count):
            box: list[FakeTransport] = []

            async def handshake(box: list[FakeTransport] = box) -> None:
                box.append(self.open()[1])
                await turns(1)

            yield handshake()
            answer = box[0].take()
            assert b"welcome" in answer, answer[:200]

    async def joins(self, count: int) -> Windows:
        anchors = []
        for i in range(count):
            conn, transport = self.open()
            conn.data_received(masked({"type": "join", "room": f"r{i}", "username": "anchor"}))
            await until(transport, b'"joined"')
            transport.written.clear()
            anchors.append((conn, transport))
        frames = [masked({"type": "join", "room": f"r{i}", "username": "u"}) for i in range(count)]
        joiners = [self.open() for _ in range(count)]
        await turns(2)
        for (conn, transport), frame, (_, anchor) in zip(joiners, frames, anchors, strict=True):
            transport.take()

            async def join(
                conn: Connection = conn,
                transport: FakeTransport = transport,
                frame: bytes = frame,
                anchor: FakeTransport = anchor,
            ) -> None:
                conn.data_received(frame)
                await until(transport, b'"joined"')
                await until(anchor, b'"user_joined"')

            yield join()

    async def closes(self, count: int) -> Windows:
        pairs = []
        for i in range(count):
            for name in ("anchor", "closer"):
                conn, transport = self.open()
                conn.data_received(masked({"type": "join", "room": f"c{i}", "username": name}))
                await until(transport, b'"joined"')
                pairs.append((conn, transport))
        await turns(2)
        for i in range(0, len(pairs), 2):
            (_, anchor), (conn, transport) = pairs[i], pairs[i + 1]
            anchor.written.clear()
            transport.written.clear()

            async def close(
                conn: Connection = conn,
                transport: FakeTransport = transport,
                anchor: FakeTransport = anchor,
            ) -> None:
                # As a client closing normally: its close frame (1000), then, once the node's
                # close frame and end of stream came back, its own end of the stream. A node
                # that closed the connection (not a half-close) reads no end of stream: the
                # transport tells it the connection is lost, and that is all.
                conn.data_received(CLOSE_FRAME)
                assert transport.ended, transport.written
                if not transport.closed:
                    conn.eof_received()
                conn.connection_lost(None)
                await until(anchor, b'"user_left"')

            yield close()
            assert transport.written[0].startswith(b"\x88\x02\x03\xe8"), transport.written

    async def deliveries(self, count: int) -> Windows:
        # Only the last member, whose frame ends a window, needs a stand-in that can be watched.
        members = [self.open(bare=True) for _ in range(self.room_size - 1)] + [self.open()]
        for i, (conn, _) in enumerate(members):
            conn.data_received(masked({"type": "join", "room": "room", "username": f"m{i}"}))
            await until(members[i][1], b'"joined"')
        frames = [masked({"type": "message", "room": "room", "text": f"{i:08d}" * 12})
                  for i in range(count)]  # fmt: skip
        sender = members[0][0]
        last = members[-1][1]
        for frame in frames:
            for _, transport in members:
                transport.written.clear()

            async def deliver(frame: bytes = frame) -> None:
                sender.data_received(frame)
                await until(last, b'"message"')

            yield deliver()


Windows = AsyncIterator[Coroutine[None, None, None]]
PARTS = {
    "idle": "idles",
    "handshake": "handshakes",
    "join": "joins",
    "delivery": "deliveries",
    "close": "closes",
}


def measure(
    part: str, count: int, redis_url: str | None = None, room_size: int = ROOM_SIZE
) -> float:
    """CPU µs of one ``part`` (see the module's doc for counting its instructions); a delivery
    is one message to a room of ``room_size`` members, each a delivery."""
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    bench = loop.run_until_complete(Bench.start(redis_url))
    bench.room_size = room_size
    try:
        windows = cast(Windows, getattr(bench, PARTS[part])(count))
        cpu = 0.0
        while True:
            try:  # set-up up to the next window: not counted
                window = loop.run_until_complete(anext(windows))
            except StopAsyncIteration:
                break

            def timed(window: Coroutine[None, None, None] = window) -> Iterator[float]:
                started = time.process_time()
                loop.run_until_complete(window)
                yield time.process_time() - started

            # Each window runs inside math.fsum, which nothing else here calls: callgrind's
            # --toggle-collect=math_fsum counts the windows and nothing else.
            cpu += math.fsum(timed())
        # The part's end: callgrind's --dump-after=math_prod writes its count to a file.
        math.prod(())
        return cpu * 1e6 / count / (room_size if part == "delivery" else 1)
    finally:
        loop.run_until_complete(bench.broker.stop())
        loop.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--redis", action="store_true", help="the Redis broker (a redis-server)")
    parser.add_argument("--redis-port", type=int, default=0, help="its port (default: a free one)")
    parser.add_argument(
        "--room-size", type=int, default=ROOM_SIZE,
        help=f"delivery: members of the room, each one a delivery (default {ROOM_SIZE})",
    )  # fmt: skip
    parser.add_argument("parts", nargs="*", help=f"some of {', '.join(PARTS)} (default all)")
    args = parser.parse_args()
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    cluster = LocalCluster(0, nginx=False) if args.redis else None
    if cluster is not None:
        cluster.redis_port = args.redis_port
        cluster.start()
    try:
        for part in args.parts or PARTS:
            redis_url = cluster.redis_url if cluster else None
            micros = measure(part, args.count, redis_url, args.room_size)
            print(f"{part}: {micros:.2f} µs CPU each ({args.count})", flush=True)
    finally:
        if cluster is not None:
            cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
