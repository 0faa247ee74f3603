"""The unit costs the capacity model (``roomcast capacity``, docs/capacity.md) needs beyond what
``make bench`` measures, on a real redis-server, 3 real nodes and nginx. About four minutes:

    .venv/bin/python bench/unit_costs.py            # measure, write results/unit_costs.json
    .venv/bin/python bench/unit_costs.py --generate # + regenerate the model's defaults

1. **setups through nginx**: ``--clients`` clients open a WebSocket through nginx (from many
   loopback source addresses) and join rooms of ``--setup-room-size``, 50 at a time: node,
   nginx and Redis CPU per setup, nginx RSS per connection held.
2. **an idle window** of ``--seconds`` with every client connected and silent: the fixed CPU
   of nodes and Redis (timers, cron), subtracted from the message windows below.
3. **messages**, nodes direct, ``--rooms`` rooms of each size, one sender per room, at the
   same message rate and text: rooms of 1 (its own echo: 1 delivery, 1 subscribing node per
   message), of 3 (one member per node: 3 deliveries, 3 subscribing nodes) and of 60 (20 per
   node: 60 deliveries, 3 subscribing nodes). The sizes take turns, ``--rounds`` times, so
   that the machine's drift (other people's work) falls on each alike.
4. **Redis memory of a room** at the default history settings: ``--memory-rooms`` rooms filled
   by real nodes to half of ``history_size`` and then past it: ``used_memory`` growth per
   message kept and per room; the presence hash of a setup room (``--setup-room-size``
   members) against a one-member room's.
5. **Redis fan-out**: Redis CPU per PUBLISH to a channel with 1 and with 16 subscribed
   connections, the two taking turns: the cost of each node a message is sent to.

A message costs the nodes one ingest (a, the sender's node), one receive per subscribing node
(b) and one write per delivery (d): M1 = a + b + d, M3 = a + 3b + 3d, M60 = a + 3b + 60d, three
equations for the three unknowns (bench/capacity_costs.py). Redis: the rooms of 1 give the
publish script's cost with one subscriber, phase 5 the cost of each further one. Every process
started here is stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from roomcast_bench.procstat import CpuWindow, cpu_seconds, rss_kib, with_children
from roomcast_bench.systems import ADMISSION_OFF
from roomcast_dev.devcluster import SHARED_LIMITS_OFF, LocalCluster
from websockets.asyncio.client import ClientConnection, connect

from roomcast.broker import scripts
from roomcast.runtime.config import Settings

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "unit_costs.json"
FAST = {  # as the benchmark: the per-client limits protect people, not a load generator
    "ROOMCAST_RATE_LIMIT_PER_SECOND": "1000000",
    "ROOMCAST_RATE_LIMIT_BURST": "1000000",
    "ROOMCAST_MESSAGE_RATE_PER_SECOND": "1000000",
    "ROOMCAST_MESSAGE_RATE_BURST": "1000000",
    **SHARED_LIMITS_OFF,
    # The message windows open 2,560 members from one address straight to the nodes: past an
    # address's handshake burst (400 a node), which then answered 429 and ended the run.
    **ADMISSION_OFF,
}
TEXT_BYTES = 100  # a typical short chat line, as bench/history_cost.py
ROOM_SIZES = (1, 3, 60)  # the three message windows: see the docstring
FAN_OUT = 16  # subscribers of the wide channel in phase 5
PER_SOURCE = 200  # clients per loopback source address: nginx allows 256 WebSockets per address


def source_address(index: int) -> str:
    block = index // PER_SOURCE
    return f"127.0.{1 + (block // 250) % 250}.{1 + block % 250}"


async def open_member(url: str, room: str, name: str, source: str) -> ClientConnection:
    ws = await connect(url, max_queue=None, local_addr=(source, 0), open_timeout=30)
    await ws.recv()  # welcome
    await ws.send(json.dumps({"type": "join", "room": room, "username": name}))
    async with asyncio.timeout(30):
        while True:
            event = json.loads(await ws.recv())
            if event["type"] == "joined":
                return ws
            if event["type"] == "error":
                raise RuntimeError(f"join refused: {event}")


class Counter:
    """Counts ``message`` frames received by a set of connections (and nothing else)."""

    def __init__(self) -> None:
        self.messages = 0
        self._tasks: list[asyncio.Task[None]] = []

    def watch(self, connections: list[ClientConnection]) -> None:
        self._tasks += [asyncio.create_task(self._read(ws)) for ws in connections]

    async def _read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            if '"type":"message"' in (raw if isinstance(raw, str) else raw.decode()):
                self.messages += 1

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def groups(cluster: LocalCluster) -> dict[str, list[int]]:
    assert cluster.redis is not None and cluster.nginx is not None
    return {
        "nodes": [node.process.pid for node in cluster.nodes],
        "nginx": with_children(cluster.nginx.pid),
        "redis": [cluster.redis.pid],
    }


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


async def setups(
    cluster: LocalCluster, args: argparse.Namespace
) -> tuple[dict[str, Any], list[ClientConnection]]:
    """Phase 1: ``clients`` setups through nginx; the connections stay open (returned)."""
    client = redis.Redis.from_url(cluster.redis_url or "")
    assert cluster.nginx is not None
    nginx_pids = with_children(cluster.nginx.pid)
    nginx_before = sum(rss_kib(pid) for pid in nginx_pids)
    gate = asyncio.Semaphore(50)

    async def one(index: int) -> ClientConnection:
        async with gate:
            room = f"setup-{index // args.setup_room_size}"
            return await open_member(cluster.url, room, f"u{index}", source_address(index))

    window = CpuWindow(groups(cluster)).start()
    started = time.monotonic()
    connections = await asyncio.gather(*(one(i) for i in range(args.clients)))
    seconds = time.monotonic() - started
    cpu = window.stop()
    await asyncio.sleep(1)  # the last user_joined frames and presence writes land
    result = {
        "clients": args.clients,
        "room_size": args.setup_room_size,
        "seconds": round(seconds, 2),
        "cpu_us_per_setup": {k: round(v / args.clients * 1e6, 2) for k, v in cpu.items()},
        "nginx_kib_per_connection": round(
            (sum(rss_kib(pid) for pid in nginx_pids) - nginx_before) / args.clients, 3
        ),
        "other_cores_busy": round(window.other / seconds, 3),
    }
    client.close()
    return result, connections


async def idle(cluster: LocalCluster, seconds: float) -> dict[str, float]:
    """Phase 2: CPU seconds per second of nodes and Redis with everyone connected and silent."""
    window = CpuWindow(groups(cluster)).start()
    await asyncio.sleep(seconds)  # the measurement is this quiet window itself
    return {k: v / seconds for k, v in window.stop().items()}


class RoomSet:
    """``--rooms`` rooms of ``size`` members spread over the nodes (nodes direct), the first
    member of each sending; windows of it are measured in turn with the other sets."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.rooms: list[list[ClientConnection]] = []
        self.counter = Counter()
        self.messages = self.deliveries = 0
        self.seconds = self.other = 0.0
        self.cpu: dict[str, float] = {}

    async def open(self, cluster: LocalCluster, count: int) -> None:
        urls = [node.url for node in cluster.nodes]
        gate = asyncio.Semaphore(50)

        async def member(r: int, m: int) -> ClientConnection:
            async with gate:
                url = urls[(r + m) % len(urls)]
                return await open_member(url, f"k{self.size}-{r}", f"m{m}", "127.0.0.1")

        for r in range(count):
            self.rooms.append(list(await asyncio.gather(*(member(r, m) for m in range(self.size)))))
        self.counter.watch([ws for room in self.rooms for ws in room])
        await probe(self.rooms, self.counter, self.size)

    async def window(self, cluster: LocalCluster, rate: float, seconds: float) -> None:
        """``rate`` messages/s for ``seconds``, until every member has them all; adds up."""
        interval = len(self.rooms) / rate
        frame = json.dumps({"type": "message", "text": "x" * TEXT_BYTES})
        sent = 0

        async def speak(ws: ClientConnection, offset: float, until: float) -> None:
            nonlocal sent
            next_at = time.monotonic() + offset
            while next_at < until:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                await ws.send(frame)
                sent += 1
                next_at += interval

        self.counter.messages = 0
        window = CpuWindow(groups(cluster)).start()
        started = time.monotonic()
        until = started + seconds
        await asyncio.gather(
            *(speak(room[0], i * interval / len(self.rooms), until) for i, room in
              enumerate(self.rooms))
        )  # fmt: skip
        await wait_for(lambda: self.counter.messages >= sent * self.size, 30)
        elapsed = time.monotonic() - started
        for tier, used in window.stop().items():
            self.cpu[tier] = self.cpu.get(tier, 0.0) + used
        self.messages += sent
        self.deliveries += self.counter.messages
        self.seconds += elapsed
        self.other += window.other

    async def close(self) -> None:
        await self.counter.stop()
        for room in self.rooms:
            for ws in room:
                await ws.close()

    def result(self, nodes: int, fixed: dict[str, float]) -> dict[str, Any]:
        marginal = {k: max(0.0, v - fixed.get(k, 0.0) * self.seconds) for k, v in self.cpu.items()}
        return {
            "room_size": self.size,
            "subscribing_nodes": min(self.size, nodes),
            "rooms": len(self.rooms),
            "messages": self.messages,
            "deliveries": self.deliveries,
            "seconds": round(self.seconds, 2),
            "cpu_us_per_message": {
                k: round(v / self.messages * 1e6, 2) for k, v in marginal.items()
            },
            "other_cores_busy": round(self.other / self.seconds, 3),
        }


async def messages(
    cluster: LocalCluster, args: argparse.Namespace, fixed: dict[str, float]
) -> list[dict[str, Any]]:
    """Phase 3: the room sizes' windows interleaved, ``--rounds`` times, so that the machine's
    drift (other people's work) falls on every size alike."""
    sets = [RoomSet(size) for size in ROOM_SIZES]
    for room_set in sets:
        await room_set.open(cluster, args.rooms)
    for turn in range(args.rounds):
        for room_set in sets:
            print(f"  round {turn + 1}/{args.rounds}, rooms of {room_set.size}", file=sys.stderr)
            await room_set.window(cluster, args.rate, args.seconds / args.rounds)
    for room_set in sets:
        await room_set.close()
    return [room_set.result(len(cluster.nodes), fixed) for room_set in sets]


async def probe(rooms: list[list[ClientConnection]], counter: Counter, spread: int) -> None:
    """One message per room until every member got one: every node hears every room."""
    for room in rooms:
        await room[0].send(json.dumps({"type": "message", "text": "probe"}))
    await wait_for(lambda: counter.messages >= len(rooms) * spread, 20)


async def wait_for(done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("messages did not all arrive")
        await asyncio.sleep(0.05)  # polls a counter the reader tasks advance


async def room_memory(cluster: LocalCluster, args: argparse.Namespace) -> dict[str, Any]:
    """Phase 4: ``--memory-rooms`` rooms, one member each, filled to half and then past
    ``history_size`` by real nodes; Redis ``used_memory`` growth (what counts against
    maxmemory: keys, values, allocator rounding and the key tables' entries) per message kept
    and per room, and ``MEMORY USAGE`` of one room's keys (values only) beside it."""
    limits = Settings()
    client = redis.Redis.from_url(cluster.redis_url or "")
    urls = [node.url for node in cluster.nodes]
    names = [f"memory-{i}" for i in range(args.memory_rooms)]
    before = used_memory(client)
    writers = [
        await open_member(urls[i % len(urls)], room, "writer", "127.0.0.1")
        for i, room in enumerate(names)
    ]
    counter = Counter()
    counter.watch(writers)
    frame = json.dumps({"type": "message", "text": "x" * TEXT_BYTES})
    half = limits.history_size // 2
    used = []
    # Two fill levels, half and past full, so that the growth splits into a part per message
    # kept and a part per room (its other keys, a one-member presence hash, table entries).
    for total in (half, limits.history_size + 20):
        for _ in range(total - counter.messages // len(writers)):
            for ws in writers:
                await ws.send(frame)
        expected = total * len(writers)
        await wait_for(lambda: counter.messages >= expected, 60)  # noqa: B023 (awaited here)
        used.append(used_memory(client) - before)
    await counter.stop()
    seq, epoch, history, presence = scripts.room_keys(names[0])
    sizes = {
        key.decode().rsplit(":", 1)[1]: int(client.memory_usage(key) or 0)
        for key in (seq, epoch, history, scripts.history_bytes_key(names[0]), presence)
    }
    kept = int(client.llen(history))
    stored = int(client.get(scripts.history_bytes_key(names[0])) or 0)
    for ws in writers:
        await ws.close()
    presence_one = sizes["presence"]
    full = scripts.room_keys("setup-0")[3]
    presence_full, members = int(client.memory_usage(full) or 0), int(client.hlen(full))
    client.close()
    per_message = (used[1] - used[0]) / len(names) / (kept - half)
    per_room = used[1] / len(names)
    return {
        "text_bytes": TEXT_BYTES,
        "history_size": limits.history_size,
        "history_ttl": limits.history_ttl,
        "history_bytes": limits.history_bytes,
        "rooms": len(names),
        "messages_kept": kept,
        "stored_bytes_per_message": round(stored / kept, 1),
        "memory_usage_by_key": sizes,
        "used_memory_per_room": round(per_room, 1),
        "used_memory_per_message": round(per_message, 1),
        "memory_usage_per_message": round(sizes["history"] / kept, 1),
        # Everything of a room but its messages: its other keys (a one-member presence hash
        # included) and every key's table entries.
        "room_fixed_bytes": round(per_room - kept * per_message, 1),
        "presence_bytes_one_member": presence_one,
        "presence_bytes_per_member": round((presence_full - presence_one) / (members - 1), 1),
    }


def _subscribe(port: int, channel: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(channel), channel))
    reply = b""
    while reply.count(b"\r\n") < 6:  # *3 $9 subscribe $N channel :1
        reply += sock.recv(4096)
    return sock


def _drain(sockets: list[socket.socket], stop: threading.Event) -> None:
    selector = selectors.DefaultSelector()
    for sock in sockets:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    while not stop.is_set():
        for key, _ in selector.select(0.1):
            with contextlib.suppress(BlockingIOError):
                key.fileobj.recv(1 << 16)  # type: ignore[union-attr]
    selector.close()


def redis_fan_out(cluster: LocalCluster, args: argparse.Namespace) -> dict[str, Any]:
    """Phase 5: Redis CPU per PUBLISH to a channel with 1 and with FAN_OUT subscribed
    connections (read by a thread), one message per round trip as at a chat's rates (each
    message its own write to each subscriber); the two channels take turns."""
    assert cluster.redis is not None
    client = redis.Redis.from_url(cluster.redis_url or "")
    channels = {1: b"capacity-fan-1", FAN_OUT: b"capacity-fan-%d" % FAN_OUT}
    sockets = [_subscribe(cluster.redis_port, ch) for n, ch in channels.items() for _ in range(n)]
    stop = threading.Event()
    reader = threading.Thread(target=_drain, args=(sockets, stop), daemon=True)
    reader.start()
    payload = b"x" * 230  # a chat message's envelope as history stores it (~227 B)
    cpu = dict.fromkeys(channels, 0.0)
    sent = dict.fromkeys(channels, 0)
    try:
        for _ in range(args.rounds):
            for count, channel in channels.items():
                before = cpu_seconds(cluster.redis.pid)
                for _ in range(args.fan_out_messages // args.rounds):
                    client.publish(channel, payload)
                cpu[count] += cpu_seconds(cluster.redis.pid) - before
                sent[count] += args.fan_out_messages // args.rounds
    finally:
        stop.set()
        reader.join()
        for sock in sockets:
            sock.close()
        client.close()
    per_message = {n: cpu[n] / sent[n] * 1e6 for n in channels}
    return {
        "messages_per_channel": sent[1],
        "cpu_us_per_publish": {str(n): round(v, 2) for n, v in per_message.items()},
        "cpu_us_per_subscriber": round((per_message[FAN_OUT] - per_message[1]) / (FAN_OUT - 1), 3),
    }


async def measure(cluster: LocalCluster, args: argparse.Namespace) -> dict[str, Any]:
    print(f"setups: {args.clients} clients through nginx", file=sys.stderr)
    setup, held = await setups(cluster, args)
    print(f"idle window: {args.seconds:g} s", file=sys.stderr)
    fixed = await idle(cluster, args.seconds)
    print(f"messages: {args.rate:g}/s, rooms of {ROOM_SIZES}, interleaved", file=sys.stderr)
    windows = await messages(cluster, args, fixed)
    print("room memory", file=sys.stderr)
    memory = await room_memory(cluster, args)
    print(f"redis fan-out: 1 vs {FAN_OUT} subscribers", file=sys.stderr)
    fan_out = redis_fan_out(cluster, args)
    for ws in held:
        await ws.close()
    return {
        "setups_through_nginx": setup,
        "idle_cores": {k: round(v, 4) for k, v in fixed.items()},
        "messages": windows,
        "room_memory": memory,
        "redis_fan_out": fan_out,
    }


def commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=HERE, check=False
    )
    return done.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1500, help="setups through nginx")
    parser.add_argument("--setup-room-size", type=int, default=10)
    parser.add_argument("--rooms", type=int, default=40, help="rooms in each message window")
    parser.add_argument("--rate", type=float, default=100.0, help="messages/s in all")
    parser.add_argument("--seconds", type=float, default=10.0, help="each room size, in all")
    parser.add_argument("--rounds", type=int, default=5, help="turns of the room sizes")
    parser.add_argument("--memory-rooms", type=int, default=40, help="rooms filled for memory")
    parser.add_argument("--fan-out-messages", type=int, default=10_000, help="per channel")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--generate",
        action="store_true",
        help="then regenerate the model's defaults (bench/capacity_costs.py)",
    )
    args = parser.parse_args(argv)
    # SIGTERM unwinds the `with` block, so every process started here stops.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.time()
    with LocalCluster(3, node_env=FAST) as cluster:
        figures = asyncio.run(measure(cluster, args))
    result = {
        "version": 1,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(started)),
        "command": "unit_costs.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": commit(),
        "seconds": round(time.time() - started, 1),
        **figures,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if args.generate:
        from capacity_costs import main as generate

        return generate([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
