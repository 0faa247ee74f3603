"""Node CPU and system calls of a connection setup, split into its parts: the handshake (TCP
accept + HTTP upgrade + welcome), the join (join frame, the Redis join script, the joiner's own
``user_joined`` back through the subscription, ``joined`` + ``user_joined`` to a member), and the
close.

One roomcast node and one redis-server on loopback (started and stopped here); ROOMS rooms
already hold one member each, so every join is announced to one local member, as in
``make bench``'s connect scenario. The clients are raw sockets in this process (a minimal
WebSocket client), 50 in flight; the node's CPU is read from /proc and its system calls are
counted by ``perf stat`` (when it may trace the node), per phase, divided by the setups.

The Node.js baseline (``bench/baseline/server.js``, one node) runs the same phases right after,
in the same run, when it can run here (``--servers roomcast`` leaves it out): its handshake ends
at the 101 (it sends no ``welcome``) and its join when the room's member hears ``user_joined``
(it sends the joiner nothing). Both nodes get the benchmark's settings (``make bench``'s
per-client limits and admission off).

Run: ``.venv/bin/python bench/setup_cost.py [--setups 3000] [--pyspy DIR]`` (about 40 s).
With ``--pyspy DIR`` each roomcast phase is also recorded by py-spy (DIR/setup-<phase>.txt,
collapsed stacks, and the top functions printed).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import orjson
from roomcast_bench.procstat import cpu_seconds
from roomcast_bench.scenarios import summarize_collapsed
from roomcast_bench.syscalls import SyscallWindow, per_unit
from roomcast_bench.systems import (
    ADMISSION_OFF,
    ROOMCAST_BENCH_ENV,
    BaselineCluster,
    baseline_unavailable,
    roomcast_source,
)
from roomcast_dev.devcluster import LocalCluster

IN_FLIGHT = 50
ROOMS = 500


def _masked(payload: bytes, opcode: int = 0x1) -> bytes:
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    else:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


class Client(asyncio.Protocol):
    """Handshake, then text frames; ``waiting`` resolves on the first frame holding ``mark``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.upgraded = False
        self.mark = b'"type":"welcome"'
        self.waiting: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.seen = 0  # frames holding ``count_mark``
        self.count_mark = b'"type":"user_joined"'

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def expect(self, mark: bytes) -> asyncio.Future[None]:
        self.mark = mark
        self.waiting = asyncio.get_running_loop().create_future()
        return self.waiting

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buffer.startswith(b"HTTP/1.1 101"):
                self.waiting.set_exception(ConnectionError(self.buffer[:80].decode()))
                return
            self.upgraded = True
            self.buffer = self.buffer[end + 4 :]
            if not self.mark:  # the 101 is all this handshake waits for
                self.waiting.set_result(None)
        while len(self.buffer) >= 2:
            length = self.buffer[1] & 0x7F
            start = 2
            if length == 126:
                if len(self.buffer) < 4:
                    return
                length, start = struct.unpack("!H", self.buffer[2:4])[0], 4
            elif length == 127:
                if len(self.buffer) < 10:
                    return
                length, start = struct.unpack("!Q", self.buffer[2:10])[0], 10
            if len(self.buffer) < start + length:
                return
            payload = self.buffer[start : start + length]
            self.buffer = self.buffer[start + length :]
            if self.count_mark in payload:
                self.seen += 1
            if self.mark in payload and not self.waiting.done():
                self.waiting.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.waiting.done():
            self.waiting.set_exception(ConnectionError("closed"))


async def _open(host: str, port: int, welcome: bool = True) -> Client:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(Client, host, port)
    if not welcome:  # the baseline sends nothing after its 101
        client.mark = b""
    key = base64.b64encode(os.urandom(16))
    assert client.transport is not None
    client.transport.write(
        b"GET /chat HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (host.encode(), port, key)
    )
    await client.waiting
    return client


async def _bounded(jobs: list[Callable[[], Awaitable[None]]]) -> None:
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def run(job: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            await job()

    await asyncio.gather(*(run(job) for job in jobs))


async def _join(client: Client, room: str, name: str, joined: bool = True) -> None:
    # The baseline sends the joiner nothing: its anchors' count says when (no waiter then).
    waiter = client.expect(b'"type":"joined"') if joined else None
    assert client.transport is not None
    client.transport.write(_masked(orjson.dumps({"type": "join", "room": room, "username": name})))
    if waiter is not None:
        await waiter


async def _close(client: Client) -> None:
    assert client.transport is not None
    client.transport.write(_masked(struct.pack("!H", 1000), opcode=0x8))
    await client.closed


def gc_seconds(metrics_url: str | None) -> dict[str, float]:
    """A roomcast node's time in the garbage collector so far, per generation (its metrics)."""
    if metrics_url is None:
        return {}
    with urllib.request.urlopen(metrics_url + "/metrics", timeout=5) as answer:
        text = answer.read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith('roomcast_gc_pause_seconds_sum{generation="'):
            generation = line.split('"')[1]
            found[generation] = float(line.rsplit(" ", 1)[1])
    return found


class Phase:
    """Node CPU, system calls and (optionally) a py-spy recording around one phase."""

    def __init__(
        self, server: str, pid: int, pyspy_dir: Path | None, others: list[int] | None = None
    ) -> None:
        self.server = server
        self.pid = pid  # the node the new clients use
        self.others = others or []  # nodes that only hear the joins (their rooms' anchors)
        self.pyspy_dir = pyspy_dir
        self.rows: list[tuple[str, float, dict[str, float] | None]] = []
        self.metrics_url: str | None = None  # roomcast: its GC time per phase is shown

    async def run(self, name: str, units: int, work: Awaitable[None]) -> None:
        recorder = None
        if self.pyspy_dir is not None:
            out = self.pyspy_dir / f"setup-{name}.txt"
            pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            recorder = subprocess.Popen(  # noqa: ASYNC220 (returns at once)
                [pyspy, "record", "--format", "raw", "--rate", "1000", "--nonblocking",
                 "-o", str(out), "--pid", str(self.pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            await asyncio.sleep(1.0)  # attach before the work starts
        window = SyscallWindow([self.pid]).start()
        cpu = cpu_seconds(self.pid)
        others = sum(cpu_seconds(pid) for pid in self.others)
        gc_before = gc_seconds(self.metrics_url)
        await work
        await asyncio.sleep(0.2)  # what the last replies set off (metrics, timers)
        cpu = cpu_seconds(self.pid) - cpu
        others = sum(cpu_seconds(pid) for pid in self.others) - others
        counts = window.stop()
        gc_after = gc_seconds(self.metrics_url)
        if gc_after:
            spent = ", ".join(
                f"gen {g} {(gc_after[g] - gc_before.get(g, 0.0)) * 1e6 / units:.1f}"
                for g in sorted(gc_after)
            )
            print(f"  {self.server} {name}: garbage collector µs per setup: {spent}", flush=True)
        if window.problem:
            print(f"  ({name}: no system calls: {window.problem})")
        self.rows.append((f"{self.server} {name}", cpu * 1e6 / units, per_unit(counts, units)))
        if self.others:
            label = f"{self.server} {name}, the {len(self.others)} other nodes"
            self.rows.append((label, others * 1e6 / units, None))
        if recorder is not None:
            recorder.send_signal(signal.SIGINT)
            recorder.wait(30)
            out = self.pyspy_dir / f"setup-{name}.txt"  # type: ignore[operator]
            if out.exists():
                top = summarize_collapsed(out.read_text(), top=15)
                for kind in ("self_percent", "total_percent"):
                    shares = ", ".join(f"{f} {p:.1f}%" for f, p in top[kind])
                    print(f"  py-spy {name}, {kind} of {top['samples']} samples: {shares}")

    @staticmethod
    def report(rows: list[tuple[str, float, dict[str, float] | None]]) -> None:
        calls = sorted({c for _, _, counts in rows if counts for c in counts})
        print("| phase | node CPU µs per setup | " + " | ".join(calls) + " |")
        print("| --- | ---: | " + " | ".join("---:" for _ in calls) + " |")
        for name, micros, counts in rows:
            cells = [f"{(counts or {}).get(c, 0):.2f}" for c in calls]
            print(f"| {name} | {micros:.1f} | " + " | ".join(cells) + " |")


async def measure(phase: Phase, host: str, ports: list[int], setups: int, warmup: int) -> None:
    """New clients on the first node; every room has one member (anchor) on every node.

    ``warmup`` unmeasured rounds of as many setups (opened, joined, closed) come first: the
    baseline's JIT compiles its hot paths only after a while (in ``make bench`` the scenarios
    before ``connect`` warm it up)."""
    roomcast = phase.server.startswith("roomcast")
    port = ports[0]
    anchors = [await _open(host, p, roomcast) for p in ports for _ in range(ROOMS)]
    await _bounded(
        [
            partial(_join, a, f"room-{i % ROOMS}", f"anchor-{i}", roomcast)
            for i, a in enumerate(anchors)
        ]
    )
    for round_ in range(warmup + 1):
        clients: list[Client] = []
        heard = sum(a.seen for a in anchors) + setups * len(ports)

        async def handshakes(clients: list[Client] = clients) -> None:
            async def one() -> None:
                clients.append(await _open(host, port, roomcast))

            await _bounded([one for _ in range(setups)])

        async def joins(clients: list[Client] = clients, heard: int = heard) -> None:
            await _bounded(
                [
                    partial(_join, c, f"room-{i % ROOMS}", f"user-{i}", roomcast)
                    for i, c in enumerate(clients)
                ]
            )
            # Every anchor counts the user_joined it got; polled, as they come from many sockets.
            deadline = time.monotonic() + 30
            while sum(a.seen for a in anchors) < heard and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.01)

        async def closes(clients: list[Client] = clients) -> None:
            await _bounded([partial(_close, c) for c in clients])

        if round_ < warmup:
            print(f"  {phase.server}: warm-up round {round_ + 1} of {warmup}", flush=True)
            await handshakes()
            await joins()
            await closes()
            continue
        await phase.run("handshake", setups, handshakes())
        await phase.run("join", setups, joins())
        await phase.run("close", setups, closes())
    for anchor in anchors:
        await _close(anchor)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setups", type=int, default=3000)
    parser.add_argument("--pyspy", type=Path, help="record each phase with py-spy into DIR")
    parser.add_argument(
        "--warmup", type=int, default=1, help="unmeasured rounds of as many setups first"
    )
    parser.add_argument(
        "--nodes", type=int, default=1,
        help="nodes per server; the new clients use the first, rooms have a member on each",
    )  # fmt: skip
    parser.add_argument(
        "--servers", default="roomcast,baseline",
        help="comma list of roomcast, baseline, roomcast@REV (nodes run git revision REV)",
    )  # fmt: skip
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE",
        help="one more setting for the roomcast node (to compare settings)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.pyspy is not None:
        args.pyspy.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, float, dict[str, float] | None]] = []
    exports = Path(tempfile.mkdtemp(prefix="setup-cost-"))
    for server in args.servers.split(","):
        cluster: LocalCluster
        if server.startswith("roomcast"):
            env = {**ROOMCAST_BENCH_ENV, **ADMISSION_OFF, **dict(e.split("=", 1) for e in args.env)}
            _, _, rev = server.partition("@")
            if rev:  # the nodes run that commit's code (exported), e.g. to compare before/after
                env["PYTHONPATH"] = str(roomcast_source(rev, exports / rev.replace("/", "_")))
            cluster = LocalCluster(args.nodes, nginx=False, node_env=env)
        elif server == "baseline" and (why := baseline_unavailable()) is not None:
            print(f"baseline skipped: {why}")
            continue
        elif server == "baseline":
            cluster = BaselineCluster(args.nodes, nginx=False)
        else:
            parser.error(f"unknown server {server!r}")
        with cluster:
            node, *others = cluster.nodes
            pid = node.process.pid
            print(f"{server} node pid {pid}, {args.setups} setups into {ROOMS} rooms", flush=True)
            pyspy = args.pyspy if server == "roomcast" else None
            phase = Phase(server, pid, pyspy, [o.process.pid for o in others])
            if server.startswith("roomcast"):
                phase.metrics_url = node.metrics_url
            ports = [n.port for n in cluster.nodes]
            asyncio.run(measure(phase, "127.0.0.1", ports, args.setups, args.warmup))
            rows += phase.rows
    shutil.rmtree(exports, ignore_errors=True)
    Phase.report(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
