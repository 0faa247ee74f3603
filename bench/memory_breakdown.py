#!/usr/bin/env python3
"""Where a node's memory per idle, joined connection goes: RSS, Python objects by type, and
tracemalloc's allocation sites, per connection.

Run: ``.venv/bin/python bench/memory_breakdown.py [--levels 4000,16000] [--frames 6]``.

It starts a redis-server and ONE real node (``python -m roomcast``, with the benchmark's limits
switched off) on loopback, then fills it level by level with clients in rooms of
``--room-size`` (each joined, and probed until every member heard its room, as in the benchmark's
idle scenario), from the benchmark's load-generator workers. At each level (and before the
first) the node, asked by SIGUSR1, collects garbage and writes: its VmRSS, the count and
``sys.getsizeof`` of every object the collector tracks, by type, and a tracemalloc snapshot.
What is printed is the growth between two levels divided by the connections added: RSS, the
Python heap tracemalloc sees, objects by type, and allocation sites (file:line, and the
largest call stacks). The last interval is the one to read (the first includes one-time growth).

tracemalloc slows the node and its own bookkeeping inflates RSS; ``--rss-only`` runs the node
without it for a clean RSS figure (types are still counted). RSS growth that tracemalloc does not
see is memory outside Python's allocators (the kernel's socket buffers are not in RSS), or
allocator slack: freed blocks in arenas or pages that stay in RSS.

A node holds fewer than 20,000 sockets here (RLIMIT_NOFILE), so the last level is at most ~19,000.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson
from roomcast_bench.coordinator import BenchError, Generator, Progress
from roomcast_bench.procstat import cpu_seconds
from roomcast_bench.systems import ROOMCAST_BENCH_ENV
from roomcast_bench.worker import client_kind
from roomcast_dev.devcluster import ClusterError, LocalCluster, ManagedProcess

DUMP_DIR_ENV = "ROOMCAST_MEMORY_DUMP_DIR"
DUMP_MARK = "memory_dump"
KIB = 1024.0


# The node side: `python bench/memory_breakdown.py --serve-node` is `python -m roomcast` with a
# SIGUSR1 handler that writes what was measured into the dump directory.


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _dump(seq: int, directory: Path) -> None:
    import tracemalloc

    gc.collect()
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for obj in gc.get_objects():
        kind = type(obj)
        name = f"{kind.__module__}.{kind.__qualname__}"
        counts[name] += 1
        sizes[name] += sys.getsizeof(obj)
    report: dict[str, Any] = {
        "rss_kib": _rss_kib(),
        "types": {name: [counts[name], sizes[name]] for name in counts},
    }
    if tracemalloc.is_tracing():
        snapshot = tracemalloc.take_snapshot()
        report["traced"] = tracemalloc.get_traced_memory()[0]
        report["tracemalloc_overhead"] = tracemalloc.get_tracemalloc_memory()
        snapshot.dump(str(directory / f"{seq}.snapshot"))
        del snapshot
    (directory / f"{seq}.json").write_bytes(orjson.dumps(report))


def serve_node() -> None:
    import runpy

    directory = Path(os.environ[DUMP_DIR_ENV])
    done = 0

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal done
        done += 1
        _dump(done, directory)
        print(orjson.dumps({DUMP_MARK: done}).decode(), flush=True)

    signal.signal(signal.SIGUSR1, on_signal)
    sys.argv = ["roomcast"]
    runpy.run_module("roomcast", run_name="__main__", alter_sys=True)


# The coordinator side.


class Probe:
    """One node under measurement; ``measure()`` asks it for a dump and reads it."""

    def __init__(self, cluster: LocalCluster, frames: int, workdir: Path) -> None:
        self.dir = workdir
        env = cluster.node_environment("node-mem")
        env.update(ROOMCAST_BENCH_ENV)
        env[DUMP_DIR_ENV] = str(workdir)
        if frames:
            env["PYTHONTRACEMALLOC"] = str(frames)
        self.process = ManagedProcess("node-mem", [sys.executable, __file__, "--serve-node"], env)
        try:
            line = self.process.wait_for_line(lambda text: '"event":"listening"' in text, 300)
        except BaseException:
            self.process.stop()
            raise
        self.url = f"ws://127.0.0.1:{int(orjson.loads(line)['port'])}/chat"
        self._seq = 0

    def measure(self, timeout: float = 600) -> tuple[dict[str, Any], Path | None]:
        self._seq += 1
        seq = self._seq
        self.process.signal(signal.SIGUSR1)
        self.process.wait_for_line(lambda text: f'"{DUMP_MARK}":{seq}}}' in text, timeout)
        report: dict[str, Any] = orjson.loads((self.dir / f"{seq}.json").read_bytes())
        snapshot = self.dir / f"{seq}.snapshot"
        return report, snapshot if snapshot.exists() else None

    def stop(self) -> None:
        self.process.stop()


def fill(
    gen: Generator,
    url: str,
    first: int,
    count: int,
    room_size: int,
    concurrency: int,
    progress: Progress,
    pid: int,
) -> None:
    """Open, join and probe ``count`` more clients (cids from ``first``), rooms of ``room_size``."""
    per_worker: list[list[dict[str, Any]]] = [[] for _ in range(gen.size)]
    for i in range(count):
        cid = first + i
        room, member = divmod(cid, room_size)
        per_worker[room % gen.size].append(
            {"cid": cid, "room": f"mem-{room}", "url": url, "publisher": member == 0}
        )
    replies = gen.call(
        "connect",
        [{"clients": w, "concurrency": concurrency, "timeout": 30.0} for w in per_worker],
        timeout=120 + count / 50,
    )
    failed = sum(r["failed"] for r in replies)
    if failed:
        errors = [e for r in replies for e in r.get("errors", [])]
        raise BenchError(f"{failed} of {count} connections failed: {errors[:3]}")
    total = first + count
    quiesce(pid)  # the joins are sent; wait until the node has handled them
    # Patient: a node under tracemalloc on a busy machine takes its time with the joins.
    best, stalled = 0, 0
    for round_no in itertools.count(1):
        replies = gen.call("probe", {"round": round_no, "quiet": 1.0, "limit": 5.0}, timeout=60)
        ready = sum(r["ready"] for r in replies)
        progress.update(f"{ready}/{total} members ready (probe {round_no})")
        if ready >= total:
            return
        best, stalled = (ready, 0) if ready > best else (best, stalled + 1)
        if stalled >= 30:
            break
    raise BenchError(f"only {best} of {total} members ever saw a probe")


def quiesce(pid: int, limit: float = 120.0) -> None:
    """Wait until ``pid``'s CPU time stops growing (the machine may be shared and slow)."""
    deadline = time.monotonic() + limit
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_seconds(pid)
        if now - last < 0.01:
            return
        last = now


def _row(label: str, size: float, count: float | None = None) -> str:
    per = f"{count:8.2f}" if count is not None else " " * 8
    return f"  {size:9.1f} B  {per}  {label}"


def report_interval(
    name: str,
    added: int,
    before: dict[str, Any],
    after: dict[str, Any],
    snapshots: tuple[Path | None, Path | None],
    top: int,
    frames: int,
) -> None:
    print(f"\n=== {name}: {added} connections added ===")
    rss = (after["rss_kib"] - before["rss_kib"]) * KIB / added
    print(f"RSS growth: {rss:.0f} B = {rss / KIB:.2f} KiB per connection")
    if "traced" in after and "traced" in before:
        traced = (after["traced"] - before["traced"]) / added
        overhead = (after["tracemalloc_overhead"] - before["tracemalloc_overhead"]) / added
        print(
            f"tracemalloc: Python heap +{traced:.0f} B/conn; its own bookkeeping +{overhead:.0f}"
            f" B/conn (in RSS, absent without tracemalloc); the rest, {rss - traced - overhead:.0f}"
            " B/conn, is outside Python's allocators or allocator slack"
        )
    print("\nObjects the collector tracks, by type (sys.getsizeof; bytes/conn, count/conn):")
    rows = []
    for kind, (count, size) in after["types"].items():
        was = before["types"].get(kind, [0, 0])
        rows.append(((size - was[1]) / added, (count - was[0]) / added, kind))
    rows.sort(reverse=True)
    for size, count, kind in rows[:top]:
        print(_row(kind, size, count))
    print(_row("(all tracked types)", sum(r[0] for r in rows), sum(r[1] for r in rows)))
    old, new = snapshots
    if old is None or new is None:
        return
    import tracemalloc

    first = tracemalloc.Snapshot.load(str(old))
    second = tracemalloc.Snapshot.load(str(new))
    print("\nAllocation sites (tracemalloc, file:line; bytes/conn, blocks/conn):")
    diffs = second.compare_to(first, "lineno")
    diffs.sort(key=lambda d: d.size_diff, reverse=True)
    for diff in diffs[:top]:
        frame = diff.traceback[0]
        print(_row(f"{_short(frame.filename)}:{frame.lineno}", diff.size_diff / added,
                   diff.count_diff / added))  # fmt: skip
    if frames > 1:
        print(f"\nLargest call stacks (tracemalloc, {frames} frames, outermost first):")
        stacks = second.compare_to(first, "traceback")
        stacks.sort(key=lambda d: d.size_diff, reverse=True)
        for diff in stacks[: max(5, top // 3)]:
            print(_row("", diff.size_diff / added, diff.count_diff / added))
            for frame in diff.traceback:
                print(f"        {_short(frame.filename)}:{frame.lineno}")


def _short(filename: str) -> str:
    for marker in ("/site-packages/", "/node/", "/lib/python3"):
        at = filename.find(marker)
        if at >= 0:
            return filename[at + len(marker) :]
    return filename


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="4000,16000", help="cumulative connection counts")
    parser.add_argument("--room-size", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--frames", type=int, default=4, help="tracemalloc frames per trace")
    parser.add_argument("--rss-only", action="store_true", help="no tracemalloc in the node")
    parser.add_argument("--top", type=int, default=25, help="rows per table")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=0,
        help="handshakes in flight per worker (default 200; 40 with tracemalloc, which is slow)",
    )
    parser.add_argument("--serve-node", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.serve_node:
        serve_node()
        return 0
    levels = [int(x) for x in args.levels.split(",") if x]
    if levels != sorted(set(levels)) or levels[0] <= 0 or levels[-1] >= 19_500:
        parser.error("--levels: increasing counts below 19,500 (one node's descriptor limit)")
    frames = 0 if args.rss_only else max(1, args.frames)
    concurrency = args.concurrency or (40 if frames else 200)
    progress = Progress()
    workdir = Path(tempfile.mkdtemp(prefix="roomcast-memory-"))
    cluster = LocalCluster(0, redis=True, nginx=False, workdir=workdir)
    gen: Generator | None = None
    probe: Probe | None = None
    try:
        cluster.start()
        probe = Probe(cluster, frames, workdir)
        gen = Generator(args.workers, client_kind(), progress)
        quiesce(probe.process.pid)  # start-up settled (lazy imports, first allocations)
        points = [(0, *probe.measure())]
        for level in levels:
            done = points[-1][0]
            fill(
                gen, probe.url, done, level - done, args.room_size, concurrency, progress,
                probe.process.pid,
            )  # fmt: skip
            quiesce(probe.process.pid)
            points.append((level, *probe.measure()))
            progress.log(f"{level} connections: RSS {points[-1][1]['rss_kib'] / KIB:.1f} MiB")
        status = gen.call("status", timeout=30)
        still_open = sum(s["open"] for s in status)
        if still_open != levels[-1]:
            raise BenchError(f"{levels[-1] - still_open} clients were disconnected")
        print(
            f"\nOne node, rooms of {args.room_size}, every client joined and probed; "
            f"tracemalloc {'off' if not frames else f'on ({frames} frames)'}."
        )
        for (n0, r0, s0), (n1, r1, s1) in itertools.pairwise(points):
            report_interval(f"{n0} -> {n1}", n1 - n0, r0, r1, (s0, s1), args.top, frames)
    except (BenchError, ClusterError) as exc:
        print(f"memory_breakdown: {exc}", file=sys.stderr)
        if probe is not None:
            print(f"the node's last lines:\n{probe.process.tail(10)}", file=sys.stderr)
        return 1
    finally:
        if gen is not None:
            gen.close()
        if probe is not None:
            probe.stop()
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
