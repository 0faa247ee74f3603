"""What a held, idle connection costs a node per heartbeat interval: two builds side by side, and
the bare round trip under them.

Two single-node systems (redis-server + one node each, reached directly): this work tree's code
and git revision ``--before`` (default ``main``). Each holds ``--connections`` idle, joined clients
(rooms of 10, the benchmark's load-generator processes, which answer pings and send nothing
else). Both are then measured over the same windows of one heartbeat interval each: node CPU
(every thread's schedstat) above the same node's with no client, per connection per interval, as
``make bench``'s onenode scenario reports it (``heartbeat_cpu_us_per_connection_per_interval``).
Measuring both at once, in the same windows, is what makes the two comparable on a shared machine.

Then the floor: a plain ``select.epoll`` loop in Python doing only the round trip (a 4-byte ping
written to each connection once per interval, spread over ticks, and the client's 8-byte pong
read), answered by another process: what the kernel (on loopback, the sender also pays for the
receiver's TCP input) and a minimal event loop cost, with no WebSocket server at all. The floor
is measured twice: the round trip, and with a client that reads the pings but never answers (the
ping's ``write`` alone), which splits the round trip into its two halves. (No user/system split:
Linux divides a thread's CPU time between the two by timer-tick samples, and a window holds too
few ticks; at 2,000 connections it moved between 22 % and 84 % kernel from one window to the next.)

Run: ``.venv/bin/python bench/heartbeat_cost.py`` (5,000, 10,000 and 19,000 connections per node
at the default 30 s interval: about 20 minutes); ``--connections 2000 --interval 3`` for a quick
look (the cost is per round trip, so a short interval gives the same figure sooner).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import select
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from roomcast_bench.coordinator import Generator, Progress
from roomcast_bench.procstat import cpu_seconds
from roomcast_bench.systems import ADMISSION_OFF, ROOMCAST_BENCH_ENV, git_describe, roomcast_source
from roomcast_dev.devcluster import LocalCluster

REPO_ROOT = Path(__file__).resolve().parents[1]
ROOM_SIZE = 10
PER_WORKER = 9_000  # clients per load-generator process (each under its own fd limit)
EXTRAPOLATE_TO = 100_000
# The floor's ping (unmasked, server to client) and the pong a client answers with (masked).
FLOOR_PING = b"\x89\x02rc"
FLOOR_PONG = bytes((0x8A, 0x82, 1, 2, 3, 4, ord("r") ^ 1, ord("c") ^ 2))
FLOOR_TICKS = 30


def _cpu_share(pid: int, seconds: float) -> float:
    """Cores ``pid`` used over the next ``seconds``."""
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - started)


def _fill(url: str, count: int, progress: Progress) -> Generator:
    """Open ``count`` clients on ``url`` in rooms of ROOM_SIZE and await every join."""
    workers = max(1, math.ceil(count / PER_WORKER))
    gen = Generator(workers, "auto", progress)
    per_worker: list[list[dict[str, Any]]] = [[] for _ in range(workers)]
    for cid in range(count):
        room, member = divmod(cid, ROOM_SIZE)
        per_worker[(member + room) % workers].append(
            {"cid": cid, "room": f"hb-{room}", "url": url, "publisher": member == 0}
        )
    replies = gen.call(
        "connect",
        [{"clients": w, "concurrency": 50, "timeout": 60} for w in per_worker],
        timeout=120 + count / 20,
    )
    failed = sum(r["failed"] for r in replies)
    if failed:
        gen.close()
        raise RuntimeError(f"{failed} of {count} clients failed to connect")
    for round_no in range(1, 21):
        ready = gen.call("probe", {"round": round_no, "quiet": True, "limit": 10.0}, timeout=60)
        if sum(r["ready"] for r in ready) >= count:
            return gen
    gen.close()
    raise RuntimeError("not every client saw its room's probe: joins unfinished")


def measure_builds(
    builds: dict[str, Path], count: int, interval: float, rounds: int, progress: Progress
) -> dict[str, Any]:
    """Per build: µs of node CPU per connection per interval, in ``rounds`` shared windows."""
    clusters: dict[str, LocalCluster] = {}
    generators: list[Generator] = []
    try:
        for label, path in builds.items():
            env = {**ROOMCAST_BENCH_ENV, **ADMISSION_OFF}
            env["ROOMCAST_PING_INTERVAL"] = str(interval)
            env["PYTHONPATH"] = str(path)
            cluster = LocalCluster(1, redis=True, nginx=False, node_env=env)
            clusters[label] = cluster
            cluster.start()
        pids = {label: c.nodes[0].process.pid for label, c in clusters.items()}
        # The empty node's own timers (the heartbeat ticks, the Redis heartbeat): subtracted.
        empty = {label: _cpu_share(pid, interval) for label, pid in pids.items()}
        for label, cluster in clusters.items():
            progress.update(f"{label}: opening {count:,} clients", force=True)
            generators.append(_fill(cluster.nodes[0].url, count, progress))
        time.sleep(interval)  # every connection pinged once, the joins' traffic over
        per_round: dict[str, list[float]] = {label: [] for label in pids}
        for round_no in range(rounds):
            progress.update(f"{count:,} connections: window {round_no + 1}/{rounds}", force=True)
            start = {label: cpu_seconds(pid) for label, pid in pids.items()}
            started = time.monotonic()
            time.sleep(interval)
            wall = time.monotonic() - started
            for label, pid in pids.items():
                cores = (cpu_seconds(pid) - start[label]) / wall
                per_round[label].append((cores - empty[label]) * interval * 1e6 / count)
        return {
            label: {
                "empty_node_cores": round(empty[label], 5),
                "us_per_connection_per_interval": [round(v, 2) for v in values],
                "median": round(sorted(values)[len(values) // 2], 2),
            }
            for label, values in per_round.items()
        }
    finally:
        for gen in generators:
            gen.close()
        for cluster in clusters.values():
            cluster.stop()


def _floor_client(port: int, count: int, ready: Any, answer: bool) -> None:
    """The floor's other end: ``count`` connections, a pong for every read if ``answer``."""
    poller = select.epoll()
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        sockets.append(sock)
        poller.register(sock.fileno(), select.EPOLLIN)
    ready.set()
    while True:
        for fd, _ in poller.poll():
            if not os.read(fd, 4096):
                return
            if answer:
                os.write(fd, FLOOR_PONG)


def measure_floor(count: int, interval: float, rounds: int, *, answer: bool = True) -> list[float]:
    """µs of CPU per connection per round trip for a bare epoll loop (see the module doc);
    ``answer=False``: a client that never pongs (the ping alone)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    client = context.Process(
        target=_floor_client,
        args=(listener.getsockname()[1], count, ready, answer),
        daemon=True,
    )
    client.start()
    conns: list[socket.socket] = []
    try:
        while len(conns) < count:
            sock, _ = listener.accept()
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as uvloop's transports
            conns.append(sock)
        ready.wait(60)
        poller = select.epoll()
        for sock in conns:
            poller.register(sock.fileno(), select.EPOLLIN)
        buckets = [[s.fileno() for s in conns[i::FLOOR_TICKS]] for i in range(FLOOR_TICKS)]
        tick = interval / FLOOR_TICKS
        state = {"due": time.monotonic(), "cursor": 0}

        def run(seconds: float) -> None:
            end = time.monotonic() + seconds
            while (now := time.monotonic()) < end:
                if now >= state["due"]:
                    for fd in buckets[int(state["cursor"])]:
                        os.write(fd, FLOOR_PING)
                    state["cursor"] = (state["cursor"] + 1) % FLOOR_TICKS
                    state["due"] += tick
                for fd, _ in poller.poll(max(0.0, min(state["due"], end) - time.monotonic())):
                    os.read(fd, 4096)

        run(interval)
        me = os.getpid()
        results = []
        for _ in range(rounds):
            before = cpu_seconds(me)
            run(interval)
            results.append(round((cpu_seconds(me) - before) * 1e6 / count, 2))
        return results
    finally:
        for sock in conns:
            sock.close()
        listener.close()
        client.join(10)
        if client.is_alive():
            client.kill()


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--connections", default="5000,10000,19000", help="comma list, per node")
    parser.add_argument("--interval", type=float, default=30.0, help="ROOMCAST_PING_INTERVAL")
    parser.add_argument("--rounds", type=int, default=3, help="windows of one interval each")
    parser.add_argument("--before", default="main", help="git revision to compare with")
    parser.add_argument("--output", type=Path, help="write the figures as JSON here")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    progress = Progress(quiet=args.quiet)
    sizes = [int(n) for n in args.connections.split(",")]
    result: dict[str, Any] = {
        "interval_s": args.interval,
        "after": git_describe(None),
        "before": git_describe(args.before),
        "load_average": os.getloadavg(),
        "sizes": {},
    }
    with tempfile.TemporaryDirectory(prefix="heartbeat-cost-") as scratch:
        builds = {
            "before": roomcast_source(args.before, Path(scratch)),
            "after": REPO_ROOT / "node",
        }
        for count in sizes:
            figures = measure_builds(builds, count, args.interval, args.rounds, progress)
            result["sizes"][str(count)] = figures
            for label, f in figures.items():
                share = f["median"] * EXTRAPOLATE_TO / args.interval / 1e6
                progress.log(
                    f"{count:,} connections, {label}: {f['median']:.1f} µs per connection per"
                    f" interval {f['us_per_connection_per_interval']}; at {EXTRAPOLATE_TO:,}:"
                    f" {share:.1%} of a core"
                )
    floor = measure_floor(min(sizes), args.interval, args.rounds)
    ping_only = measure_floor(min(sizes), args.interval, args.rounds, answer=False)
    result["floor_us_per_round_trip"] = floor
    result["floor_ping_only_us"] = ping_only
    result["load_average_end"] = os.getloadavg()
    progress.log(
        f"bare epoll round trip (floor): {_median(floor):.1f} µs {floor};"
        f" the ping alone (no pong): {_median(ping_only):.1f} µs {ping_only}"
    )
    if args.output is not None:
        args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
