"""Sharded pub/sub, measured: deliveries/s and Redis CPU per message with 1 and with 3 Redis
Cluster shards, the same offered load, on this machine. About a minute:

    .venv/bin/python bench/shards.py [--seconds 15] [--rooms 30] [--rate 25] [--members 4]

Each run starts a Redis Cluster of N primaries (no replicas) with ``RedisClusterTopology``,
two roomcast nodes in cluster mode (no nginx: the Redis side is what is compared), ``rooms``
rooms of ``members`` receivers spread over both nodes, and one sender per room sending ``rate``
messages per second. Redis CPU is read from /proc/<pid>/stat of every redis-server (user +
system), before and after the measured window. Writes bench/results/shards.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from roomcast_dev.devcluster import SHARED_LIMITS_OFF, LocalCluster
from roomcast_dev.redis_topologies import RedisClusterTopology, wait_until
from websockets.asyncio.client import ClientConnection, connect

from roomcast.broker.cluster_slots import sharded_channel, slot_of

RESULTS = Path(__file__).resolve().parent / "results" / "shards.md"
TICKS = os.sysconf("SC_CLK_TCK")
FAST = {
    "ROOMCAST_RATE_LIMIT_PER_SECOND": "1000000",
    "ROOMCAST_RATE_LIMIT_BURST": "1000000",
    "ROOMCAST_MESSAGE_RATE_PER_SECOND": "1000000",
    "ROOMCAST_MESSAGE_RATE_BURST": "1000000",
    # Issue 15's client, room and join limits: a benchmark is one client sending a lot.
    **SHARED_LIMITS_OFF,
}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


@dataclass
class Run:
    shards: int
    seconds: float = 0.0
    sent: int = 0
    delivered: int = 0
    redis_cpu: dict[int, float] = field(default_factory=dict)  # port -> CPU seconds
    node_cpu: float = 0.0
    rooms_per_shard: dict[int, int] = field(default_factory=dict)

    @property
    def deliveries_per_s(self) -> float:
        return self.delivered / self.seconds

    @property
    def redis_us_per_message(self) -> float:
        return sum(self.redis_cpu.values()) / max(1, self.sent) * 1e6

    @property
    def node_us_per_delivery(self) -> float:
        return self.node_cpu / max(1, self.delivered) * 1e6


async def _counter(ws: ClientConnection, counts: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            raw = await asyncio.wait_for(ws.recv(), 0.5)
        except TimeoutError:
            continue
        if b'"type":"message"' in (raw if isinstance(raw, bytes) else raw.encode()):
            counts[0] += 1


async def _join(url: str, room: str, name: str) -> ClientConnection:
    ws = await connect(url, max_queue=None)
    await ws.recv()  # welcome
    await ws.send(json.dumps({"type": "join", "room": room, "username": name}))
    async with asyncio.timeout(10):
        while True:
            event = json.loads(await ws.recv())
            if event["type"] == "joined":
                return ws
            if event["type"] == "error":
                raise RuntimeError(f"join refused: {event}")


def _await_ready(cluster: LocalCluster) -> None:
    def ready() -> bool:
        for node in cluster.nodes:
            try:
                with urllib.request.urlopen(f"{node.metrics_url}/readyz", timeout=2) as reply:
                    if reply.status != 200:
                        return False
            except OSError:
                return False
        return True

    wait_until(ready, 20, "nodes ready on the redis cluster")


async def _measure(
    cluster: LocalCluster, topology: RedisClusterTopology, run: Run, args: argparse.Namespace
) -> None:
    urls = [node.url for node in cluster.nodes]
    rooms = [f"bench-{uuid.uuid4().hex[:8]}" for _ in range(args.rooms)]
    for room in rooms:
        owner = topology.owner_of(slot_of(sharded_channel(room))).port
        run.rooms_per_shard[owner] = run.rooms_per_shard.get(owner, 0) + 1
    receivers = [
        await _join(urls[i % len(urls)], room, f"r{i}")
        for room in rooms
        for i in range(args.members)
    ]
    senders = [await _join(urls[i % len(urls)], room, "sender") for i, room in enumerate(rooms)]
    counts = [0]
    stop = asyncio.Event()
    readers = [asyncio.create_task(_counter(ws, counts, stop)) for ws in receivers + senders]
    await asyncio.sleep(1)  # joins settled and their user_joined events drained
    redis_pids = {server.port: server.pid for server in topology.servers}
    node_pids = [node.process.pid for node in cluster.nodes]
    redis_before = {port: cpu_seconds(pid) for port, pid in redis_pids.items()}
    nodes_before = sum(cpu_seconds(pid) for pid in node_pids)
    counts[0] = 0
    started = time.monotonic()
    interval = 1 / args.rate

    async def speak(ws: ClientConnection, index: int) -> None:
        sequence = 0
        next_at = started + index * interval / len(senders)
        while time.monotonic() - started < args.seconds:
            await ws.send(json.dumps({"type": "message", "text": f"m{sequence} " + "x" * 80}))
            run.sent += 1
            sequence += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    await asyncio.gather(*(speak(ws, i) for i, ws in enumerate(senders)))
    await asyncio.sleep(1)  # the last messages reach their receivers
    run.seconds = time.monotonic() - started
    run.delivered = counts[0]
    run.redis_cpu = {p: cpu_seconds(pid) - redis_before[p] for p, pid in redis_pids.items()}
    run.node_cpu = sum(cpu_seconds(pid) for pid in node_pids) - nodes_before
    stop.set()
    await asyncio.gather(*readers)
    for ws in receivers + senders:
        await ws.close()


def measure(shards: int, args: argparse.Namespace) -> Run:
    run = Run(shards)
    with RedisClusterTopology(primaries=shards, replicas=0) as topology:
        env = dict(FAST, **topology.node_env())
        with LocalCluster(2, redis=False, nginx=False, node_env=env) as cluster:
            _await_ready(cluster)
            asyncio.run(_measure(cluster, topology, run, args))
    return run


def report(runs: list[Run], args: argparse.Namespace) -> str:
    lines = [
        "# Sharded pub/sub: 1 vs 3 Redis Cluster shards",
        "",
        f"`bench/shards.py --seconds {args.seconds:g} --rooms {args.rooms} --rate {args.rate:g} "
        f"--members {args.members}` on this machine ({os.cpu_count()} cores, shared), "
        f"{time.strftime('%Y-%m-%d')}: 2 roomcast nodes in cluster mode, {args.rooms} rooms x "
        f"{args.members} receivers, one sender per room at {args.rate:g} messages/s "
        "(offered load identical in both runs). Redis CPU from /proc of each redis-server.",
        "",
        "| shards | messages sent | deliveries/s | Redis CPU µs/message (all shards) | "
        "busiest shard CPU % | Redis CPU s per shard | rooms per shard | node CPU µs/delivery |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        per_shard = sorted(run.redis_cpu.values(), reverse=True)
        lines.append(
            f"| {run.shards} | {run.sent} | {run.deliveries_per_s:,.0f} | "
            f"{run.redis_us_per_message:.1f} | {per_shard[0] / run.seconds * 100:.1f} | "
            f"{', '.join(f'{v:.2f}' for v in per_shard)} | "
            f"{', '.join(str(v) for v in sorted(run.rooms_per_shard.values(), reverse=True))} | "
            f"{run.node_us_per_delivery:.1f} |"
        )
    lines += [
        "",
        "Reading: Redis CPU per message is all Redis CPU in the window divided by the messages,",
        "so it includes each redis-server's fixed cost (cron, cluster bus gossip), which grows",
        "with the number of processes; the busiest shard's share is what bounds a shard. The",
        "deliveries/s are the offered load in both runs: on 2 shared cores the nodes and this",
        "load generator, not Redis, bound the rate, so no throughput gain is shown here.",
        "CPU figures from /proc have 10 ms resolution.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rooms", type=int, default=30)
    parser.add_argument("--rate", type=float, default=25, help="messages/s per room")
    parser.add_argument("--members", type=int, default=4, help="receivers per room")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    # SIGTERM unwinds the `with` blocks, so every redis-server and node started here stops.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    runs = [measure(shards, args) for shards in (1, 3)]
    text = report(runs, args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
