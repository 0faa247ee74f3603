"""The scenarios: fanout, ramp, idle, connect (onenode: onenode.py). Each returns a JSON-ready
dict of figures."""

from __future__ import annotations

import functools
import itertools
import shutil
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roomcast_bench.coordinator import BenchError, Generator
from roomcast_bench.procstat import CpuWindow, cpu_seconds, rss_kib
from roomcast_bench.ramp import BISECT, RAMP, RampSearch
from roomcast_bench.syscalls import SyscallWindow, interrupt, per_unit
from roomcast_bench.systems import System

# The ramp's stop rule (from the issue): a step is sustainable while both hold.
RAMP_MAX_P99_MS = 250.0
RAMP_MAX_LOSS = 0.01
TIMES = "\u00d7"
# py-spy needs a moment to attach before its recording clock matters.
PYSPY_ATTACH_SECONDS = 0.5


@dataclass
class RoomPlan:
    rooms: int
    members: int
    publishers: int  # per room; they are members too (they must join to speak)
    via: str = "direct"
    prefix: str = "bench"
    concurrency: int = 100
    connect_timeout: float = 10.0
    pin_rooms: bool = False  # every member of room r in worker r % workers


@dataclass
class Plan:
    """Every size and duration of one benchmark run (``--smoke`` and the full run differ)."""

    fanout_rooms: int = 5
    fanout_members: int = 100
    fanout_publishers: int = 2
    fanout_rate: float = 10_000.0
    fanout_seconds: float = 10.0
    fanout_vias: tuple[str, ...] = ("direct", "nginx")
    warmup_seconds: float = 2.0
    ramp_rates: tuple[float, ...] = (
        5_000, 10_000, 20_000, 30_000, 40_000, 50_000, 60_000, 80_000, 100_000, 120_000,
        150_000, 200_000, 250_000, 300_000, 400_000, 500_000,
    )  # fmt: skip
    ramp_seconds: float = 5.0
    # After the first failing rate: bisect until the bracket is within 5 % (at most 4 more steps).
    ramp_resolution: float = 0.05
    ramp_bisections: int = 4
    ramp_via: str = "nginx"
    idle_connections: int = 20_000
    idle_room_size: int = 10
    connect_count: int = 6_000
    connect_rooms: int = 1_500
    connect_concurrency: int = 50
    # storm: clients over 3 nodes through nginx, one node SIGKILLed (storm.py)
    storm_clients: int = 30_000
    storm_room_size: int = 100
    storm_rate: float = 50.0  # messages/s over all rooms (x room size deliveries/s)
    storm_warmup_seconds: float = 3.0
    storm_timeout: float = 300.0
    storm_tail_seconds: float = 2.0
    quiet: float = 0.3
    grace: float = 3.0
    profile_seconds: float = 0.0  # > 0: py-spy records one roomcast node during an extra step
    count_syscalls: bool = False  # perf stat counts the nodes' system calls in extra runs
    # bigroom: a join storm into one room over the 3 nodes, then latency to its last member
    bigroom_members: int = 10_000
    bigroom_concurrency: int = 200  # handshakes in flight per worker
    bigroom_deadline: float = 180.0  # seconds for the storm to be told to every member
    bigroom_messages: int = 20  # one at a time, each once the previous reached every member
    scenarios: tuple[str, ...] = (
        "idle",
        "connect",
        "fanout",
        "ramp",
        "bigroom",
        "onenode",
        "storm",
    )
    extra: dict[str, Any] = field(default_factory=dict)


SMOKE_PLAN = Plan(
    fanout_rooms=2,
    fanout_members=10,
    fanout_publishers=1,
    fanout_rate=500.0,
    fanout_seconds=2.0,
    warmup_seconds=0.5,
    ramp_rates=(500.0, 1_000.0),
    ramp_seconds=1.0,
    idle_connections=60,
    idle_room_size=10,
    connect_count=60,
    connect_rooms=15,
    connect_concurrency=10,
    storm_clients=300,
    storm_room_size=10,
    storm_rate=20.0,
    storm_warmup_seconds=1.0,
    storm_timeout=60.0,
    storm_tail_seconds=0.5,
    quiet=0.2,
    grace=2.0,
    bigroom_members=60,
    bigroom_concurrency=20,
    bigroom_deadline=30.0,
    bigroom_messages=3,
)


def percentiles(values: array[int], scale: float = 1e-3) -> dict[str, float | None]:
    """p50/p90/p99/max of microsecond samples, in milliseconds (``scale``)."""
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None, "samples": 0}
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy comes with matplotlib
        ordered = sorted(values)
        n = len(ordered)

        def pick(q: float) -> float:
            return ordered[min(n - 1, int(q * (n - 1) + 0.5))] * scale

        return {
            "p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99), "max": ordered[-1] * scale,
            "samples": n,
        }  # fmt: skip
    data = np.frombuffer(values, dtype=np.uint32)
    p50, p90, p99 = np.percentile(data, [50, 90, 99])
    return {
        "p50": float(p50) * scale, "p90": float(p90) * scale, "p99": float(p99) * scale,
        "max": float(data.max()) * scale, "samples": int(data.size),
    }  # fmt: skip


def _merge(replies: list[dict[str, Any]], key: str) -> array[int]:
    merged = array("I")
    for reply in replies:
        merged.frombytes(reply[key])
    return merged


class Runner:
    """Runs scenarios against one system with one load generator."""

    def __init__(self, generator: Generator, plan: Plan, results_dir: Path) -> None:
        self.gen = generator
        self.plan = plan
        self.results_dir = results_dir
        self.progress = generator.progress
        self._steps = 0

    # Clients

    def _room_specs(
        self, system: System, rp: RoomPlan
    ) -> tuple[list[list[dict[str, Any]]], dict[str, int]]:
        """Clients per worker; members of a room spread over nodes and workers, publishers too."""
        per_worker: list[list[dict[str, Any]]] = [[] for _ in range(self.gen.size)]
        sizes: dict[str, int] = {}
        cid = 0
        for r in range(rp.rooms):
            room = f"{rp.prefix}-{r}"
            sizes[room] = rp.members
            for m in range(rp.members):
                worker = r if rp.pin_rooms else m + r
                per_worker[worker % self.gen.size].append(
                    {
                        "cid": cid,
                        "room": room,
                        "url": system.url_for(rp.via, m + r),
                        "publisher": m < rp.publishers,
                    }
                )
                cid += 1
        return per_worker, sizes

    @staticmethod
    def _connect_line(name: str) -> Any:
        def show(latest: list[dict[str, Any]]) -> str:
            connected = sum(r.get("connected", 0) for r in latest)
            failed = sum(r.get("failed", 0) for r in latest)
            return f"{name}: connecting {connected} open, {failed} failed"

        return show

    def connect_rooms(self, system: System, rp: RoomPlan, label: str) -> dict[str, int]:
        """Open every member, join, then probe until every member's node surely hears its room."""
        per_worker, sizes = self._room_specs(system, rp)
        total = sum(len(w) for w in per_worker)
        replies = self.gen.call(
            "connect",
            [{"clients": w, "concurrency": rp.concurrency, "timeout": rp.connect_timeout}
             for w in per_worker],
            timeout=60 + total / 200,
            show=self._connect_line(label),
        )  # fmt: skip
        failed = sum(r["failed"] for r in replies)
        if failed:
            errors = [e for r in replies for e in r.get("errors", [])]
            raise BenchError(f"{label}: {failed} of {total} connections failed: {errors[:3]}")
        # Readiness is awaited, never slept: each member must see a probe from its room, which
        # proves its node's subscription works (the baseline sends no joined frame).
        for round_no in range(1, 41):
            replies = self.gen.call(
                "probe", {"round": round_no, "quiet": self.plan.quiet, "limit": 5.0},
                timeout=30,
            )  # fmt: skip
            ready = sum(r["ready"] for r in replies)
            self.progress.update(f"{label}: {ready}/{total} members ready (probe {round_no})")
            if ready >= total:
                return sizes
        raise BenchError(f"{label}: only {ready} of {total} members ever saw a probe")

    def close(self) -> None:
        self.gen.call("close_all", timeout=120)

    # Measurement

    def cpu_groups(self, system: System) -> dict[str, list[int]]:
        """Processes measured for CPU, by group (nodes, nginx, redis, generator)."""
        return self._groups(system)

    def _groups(self, system: System) -> dict[str, list[int]]:
        system.refresh_pids()
        groups = {k: list(v) for k, v in system.pid_groups.items()}
        groups["generator"] = list(self.gen.pids)
        return groups

    def step(
        self,
        system: System,
        sizes: dict[str, int],
        step_no: int,
        deliveries_per_s: float,
        seconds: float,
        label: str,
    ) -> dict[str, Any]:
        """One measured period at a fixed aggregate delivery rate."""
        # Step ids are unique for the whole run: receivers tell a late message from a new one.
        self._steps += 1
        step_no = self._steps
        members = sum(sizes.values()) / max(1, len(sizes))
        messages_per_s = deliveries_per_s / members
        publishers = self._publisher_counts()
        total_pubs = max(1, sum(publishers))
        args = [
            {
                "step": step_no,
                "rate": messages_per_s * count / total_pubs,
                "duration": seconds,
                "quiet": self.plan.quiet,
                "grace": self.plan.grace,
            }
            for count in publishers
        ]
        started = time.monotonic()

        def show(latest: list[dict[str, Any]]) -> str:
            sent = sum(r.get("sent", 0) for r in latest)
            received = sum(r.get("received", 0) for r in latest)
            elapsed = time.monotonic() - started
            return (
                f"{label}: {elapsed:4.1f}/{seconds:.0f} s target {deliveries_per_s:,.0f} del/s"
                f" sent {sent:,} msgs, received {received:,}"
                f" ({received / max(elapsed, 1e-9):,.0f}/s)"
            )

        window = CpuWindow(self._groups(system)).start()
        replies = self.gen.call("step", args, timeout=seconds + self.plan.grace + 60, show=show)
        wall = time.monotonic() - started
        cpu = window.stop()
        dead = system.alive()
        if dead:
            raise BenchError(f"{system.name}: {', '.join(dead)} exited during the run")
        sent_rooms: dict[str, int] = {}
        for reply in replies:
            for room, count in reply["sent_rooms"].items():
                sent_rooms[room] = sent_rooms.get(room, 0) + count
        expected = sum(count * sizes.get(room, 0) for room, count in sent_rooms.items())
        received = sum(r["received"] for r in replies)
        send_seconds = max(r["send_seconds"] for r in replies)
        latency = percentiles(_merge(replies, "latencies_us"))
        result: dict[str, Any] = {
            "target_deliveries_per_s": deliveries_per_s,
            "seconds": round(send_seconds, 3),
            "wall_seconds": round(wall, 3),
            "messages_sent": sum(r["sent"] for r in replies),
            "deliveries_expected": expected,
            "deliveries": received,
            "deliveries_per_s": received / send_seconds if send_seconds else 0.0,
            "loss": max(0.0, 1 - received / expected) if expected else 0.0,
            "late": sum(r["late"] for r in replies),
            "server_errors": sum(r.get("server_errors", 0) for r in replies),
            "client_disconnects": max(r.get("disconnects", 0) for r in replies),
            "latency_ms": latency,
            "cpu_seconds": {k: round(v, 4) for k, v in cpu.items()},
            "cpu_us_per_delivery": {
                k: (v * 1e6 / received if received else None) for k, v in cpu.items()
            },
            "cores_used": {k: round(v / wall, 3) for k, v in cpu.items()},
            "other_cores_busy": round(window.other / wall, 3),
            "system_cpu_share": {
                k: round(v, 3) for k, v in window.system_share().items() if v is not None
            },
        }
        errors = [e for r in replies for e in r.get("errors", [])]
        if errors:
            result["errors"] = errors[:3]
        return result

    def _publisher_counts(self) -> list[int]:
        replies = self.gen.call("status", timeout=30)
        return [r.get("publishers", 0) for r in replies]

    # Scenarios

    def fanout(self, system: System, via: str) -> dict[str, Any]:
        plan = self.plan
        rp = RoomPlan(plan.fanout_rooms, plan.fanout_members, plan.fanout_publishers, via, "fan")
        label = f"{system.name} fanout/{via}"
        sizes = self.connect_rooms(system, rp, label)
        try:
            if plan.warmup_seconds > 0:
                self.step(
                    system, sizes, 0, plan.fanout_rate, plan.warmup_seconds, label + " warm-up"
                )
            result = self.step(system, sizes, 1, plan.fanout_rate, plan.fanout_seconds, label)
            syscalls = self._count_step_syscalls(system, sizes, label) if via == "direct" else {}
            profile = None
            if plan.profile_seconds > 0 and system.name == "roomcast" and via == "direct":
                rate, seconds = plan.fanout_rate, plan.profile_seconds
                profile = self._profile(
                    system, label, "profile.svg",
                    lambda step_label: self.step(system, sizes, 0, rate, seconds, step_label),
                )  # fmt: skip
        finally:
            self.close()
        figures = {
            "scenario": "fanout",
            "server": system.name,
            "via": via,
            "rooms": rp.rooms,
            "members_per_room": rp.members,
            "publishers_per_room": rp.publishers,
            "connections": rp.rooms * rp.members,
            "steps": [result],
        }
        if profile:
            figures["profile"] = profile
        figures.update(syscalls)
        return figures

    def _count_step_syscalls(
        self, system: System, sizes: dict[str, int], label: str
    ) -> dict[str, Any]:
        """The nodes' system calls per delivery in an extra, unmeasured fan-out step."""
        plan = self.plan
        if not plan.count_syscalls:
            return {}
        counter = SyscallWindow(system.node_pids).start()
        seconds = min(plan.fanout_seconds, 5.0)  # counts need no long window
        step = self.step(system, sizes, 0, plan.fanout_rate, seconds, label + " syscalls")
        per_delivery = per_unit(counter.stop(), step["deliveries"])
        if per_delivery:
            return {"syscalls_per_delivery": per_delivery}
        return {"syscalls_problem": counter.problem or "nothing delivered"}

    def ramp(self, system: System) -> dict[str, Any]:
        plan = self.plan
        via = plan.ramp_via
        rp = RoomPlan(plan.fanout_rooms, plan.fanout_members, plan.fanout_publishers, via, "ramp")
        label = f"{system.name} ramp/{via}"
        sizes = self.connect_rooms(system, rp, label)
        steps: list[dict[str, Any]] = []
        by_rate: dict[float, dict[str, Any]] = {}
        search = RampSearch(plan.ramp_rates, plan.ramp_resolution, plan.ramp_bisections)
        try:
            if plan.warmup_seconds > 0:
                self.step(
                    system, sizes, 0, plan.ramp_rates[0], plan.warmup_seconds, label + " warm-up"
                )
            index = 0
            while (rate := search.next_rate()) is not None:
                phase = search.phase
                if phase == BISECT:
                    # After a step the server did not sustain, its backlog drains first: the next
                    # step is measured on a server at rest, as every geometric step was.
                    self._quiesce(system.node_pids + system.pid_groups.get("nginx", []))
                index += 1
                step_label = label if phase == RAMP else f"{label} bisect {search.bisections + 1}"
                result = self.step(system, sizes, index, rate, plan.ramp_seconds, step_label)
                p99 = result["latency_ms"]["p99"]
                ok = result["loss"] <= RAMP_MAX_LOSS and p99 is not None and p99 <= RAMP_MAX_P99_MS
                result["sustainable"] = ok
                result["phase"] = phase
                steps.append(result)
                by_rate[rate] = result
                self.progress.log(_step_line(step_label, result))
                search.record(rate, ok)
        finally:
            self.close()
        best = by_rate[search.last_pass] if search.last_pass is not None else None
        over = by_rate[search.first_fail] if search.first_fail is not None else None
        return {
            "scenario": "ramp",
            "server": system.name,
            "via": via,
            "rooms": rp.rooms,
            "members_per_room": rp.members,
            "publishers_per_room": rp.publishers,
            "connections": rp.rooms * rp.members,
            "rule": (
                f"sustainable while p99 <= {RAMP_MAX_P99_MS:.0f} ms and loss <= {RAMP_MAX_LOSS:.0%}"
            ),
            "steps": steps,
            "max_sustainable_deliveries_per_s": best["deliveries_per_s"] if best else 0.0,
            "max_sustainable_target": best["target_deliveries_per_s"] if best else 0.0,
            "bracket": ramp_bracket(best, over, search),
            "stopped": _ramp_stopped(over, search),
        }

    def idle(self, system: System) -> dict[str, Any]:
        plan = self.plan
        size = plan.idle_room_size
        rooms = max(1, plan.idle_connections // size)
        rp = RoomPlan(rooms, size, 1, "direct", "idle", concurrency=200)
        label = f"{system.name} idle"
        pids = system.node_pids
        self._quiesce(pids)
        before = {pid: rss_kib(pid) for pid in pids}
        redis_before = sum(rss_kib(p) for p in system.pid_groups.get("redis", []))
        started = time.monotonic()
        try:
            self.connect_rooms(system, rp, label)
            setup_seconds = time.monotonic() - started
            self._quiesce(pids)
            after = {pid: rss_kib(pid) for pid in pids}
            redis_after = sum(rss_kib(p) for p in system.pid_groups.get("redis", []))
            status = self.gen.call("status", timeout=30)
        finally:
            self.close()
        connections = rooms * size
        still_open = sum(s["open"] for s in status)
        growth = sum(after[p] - before[p] for p in pids)
        return {
            "scenario": "idle",
            "server": system.name,
            "via": "direct",
            "connections": connections,
            "open_at_measurement": still_open,
            "room_size": size,
            "setup_seconds": round(setup_seconds, 2),
            "node_rss_kib_before": [before[p] for p in pids],
            "node_rss_kib_after": [after[p] for p in pids],
            "node_rss_growth_kib": growth,
            "kib_per_connection": growth / connections if connections else None,
            "redis_rss_growth_kib": redis_after - redis_before,
        }

    def connect(self, system: System) -> dict[str, Any]:
        """Handshake + join for many new clients; done when the room hears ``user_joined``."""
        plan = self.plan
        nodes = max(1, len(system.node_urls))
        # One anchor member per room on every node, in the worker that also runs the room's new
        # clients: each node already hears every room (a setup never waits for a SUBSCRIBE, the
        # baseline's subscribe race cannot hit), and an anchor seeing the newcomer's user_joined
        # is the completion signal both servers give (the baseline sends no joined frame).
        anchors = RoomPlan(
            plan.connect_rooms, nodes, 1, "direct", "conn", concurrency=100, pin_rooms=True
        )
        label = f"{system.name} connect"
        self.connect_rooms(system, anchors, label + " anchors")
        profile = None
        syscalls: dict[str, Any] = {}
        syscalls_problem: str | None = None
        try:
            window = CpuWindow(self._groups(system)).start()
            started = time.monotonic()
            replies = self._storm(system, 10_000_000, label)
            wall = time.monotonic() - started
            cpu = window.stop()
            if plan.count_syscalls:
                counter = SyscallWindow(system.node_pids).start()
                counted = self._storm(system, 90_000_000, label + " syscalls")
                per_setup = per_unit(counter.stop(), sum(r["completed"] for r in counted))
                syscalls = {"syscalls_per_setup": per_setup} if per_setup else {}
                syscalls_problem = counter.problem
            if plan.profile_seconds > 0 and system.name == "roomcast":
                # Extra, unmeasured storms of as many new clients each (rooms grow meanwhile).
                cids = itertools.count(2 * 10_000_000, 10_000_000)
                profile = self._profile(
                    system, label, "profile-connect.svg",
                    lambda step_label: self._storm(system, next(cids), step_label),
                )  # fmt: skip
        finally:
            self.close()
        completed = sum(r["completed"] for r in replies)
        result = {
            "scenario": "connect",
            "server": system.name,
            "via": "direct",
            "connections": plan.connect_count,
            "completed": completed,
            "failed": sum(r["failed"] for r in replies),
            "rooms": plan.connect_rooms,
            "anchors_per_room": nodes,
            "concurrency": plan.connect_concurrency * self.gen.size,
            "seconds": round(wall, 3),
            "setups_per_s": completed / wall if wall else 0.0,
            "setup_ms": percentiles(_merge(replies, "durations_us")),
            "cpu_seconds": {k: round(v, 4) for k, v in cpu.items()},
            "other_cores_busy": round(window.other / wall, 3),
            "cpu_us_per_setup": {
                k: (v * 1e6 / completed if completed else None) for k, v in cpu.items()
            },
            "system_cpu_share": {
                k: round(v, 3) for k, v in window.system_share().items() if v is not None
            },
        }
        errors = [e for r in replies for e in r.get("errors", [])]
        if errors:
            result["errors"] = errors[:3]
        if profile:
            result["profile"] = profile
        result.update(syscalls)
        if syscalls_problem:
            result["syscalls_problem"] = syscalls_problem
        return result

    def _storm(self, system: System, first_cid: int, label: str) -> list[dict[str, Any]]:
        """``connect_count`` new clients, each handshake + join, spread over the rooms."""
        plan = self.plan
        per_worker: list[list[dict[str, Any]]] = [[] for _ in range(self.gen.size)]
        for i in range(plan.connect_count):
            room = i % plan.connect_rooms
            per_worker[room % self.gen.size].append(
                {"cid": first_cid + i, "room": f"conn-{room}", "url": system.url_for("direct", i)}
            )
        replies: list[dict[str, Any]] = self.gen.call(
            "setup_storm",
            [{"clients": w, "concurrency": plan.connect_concurrency, "timeout": 10.0}
             for w in per_worker],
            timeout=120 + plan.connect_count / 50,
            show=self._connect_line(label),
        )  # fmt: skip
        return replies

    # Helpers

    def _quiesce(self, pids: list[int], limit: float = 15.0) -> None:
        """Wait until the nodes are idle (CPU time stops growing), so RSS is read at rest."""
        deadline = time.monotonic() + limit
        last = sum(cpu_seconds(p) for p in pids)
        while time.monotonic() < deadline:
            time.sleep(0.25)
            now = sum(cpu_seconds(p) for p in pids)
            if now - last < 0.005:
                return
            last = now

    def _pyspy(
        self, pid: int, fmt: str, path: Path, extra: list[str], action: Callable[[], object]
    ) -> bool:
        """Record ``pid`` with py-spy while ``action`` runs; False (and a log line) on failure."""
        pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(pyspy).exists():
            self.progress.log("profile skipped: py-spy is not installed (pip install py-spy)")
            return False
        # Off a terminal py-spy prints nothing once attached (this used to wait for its
        # "Sampling process" line, which never came, so a fixed-length recording ended before
        # the load began). Now it records until the load is over and is stopped with SIGINT,
        # on which it writes its output. Errors go to a file, so no pipe can fill and stall it.
        with tempfile.TemporaryFile("w+") as errors:
            proc = subprocess.Popen(
                [pyspy, "record", "--pid", str(pid), "--format", fmt, "--output", str(path),
                 *extra],
                stdout=subprocess.DEVNULL, stderr=errors, text=True,
            )  # fmt: skip
            time.sleep(PYSPY_ATTACH_SECONDS)
            try:
                action()
            finally:
                interrupt(proc)
                errors.seek(0)
                err = errors.read()
        if not path.exists() or path.stat().st_size == 0:
            self.progress.log(f"profile failed ({proc.returncode}): {err.strip()[:300]}")
            return False
        return True

    def _profile(
        self, system: System, label: str, svg_name: str, load: Callable[[str], object]
    ) -> dict[str, Any] | None:
        """py-spy on one roomcast node during extra, unmeasured runs of ``load``.

        Two recordings: a flame graph (``svg_name``) and collapsed stacks with native frames,
        summarised as the functions holding most samples (in the JSON). --native (C frames:
        uvloop, hiredis, orjson, libc's write) needs py-spy to pause the process at each sample,
        so only the second, unmeasured recording uses it.
        """
        pid = system.node_pids[0]
        svg = self.results_dir / svg_name
        raw = self.results_dir / (svg.stem + ".collapsed.tmp")
        started = time.monotonic()
        for fmt, path, extra in (
            ("flamegraph", svg, ["--nonblocking", "--rate", "1000"]),
            ("raw", raw, ["--native", "--rate", "500"]),
        ):
            step_label = f"{label} {fmt}"
            if not self._pyspy(pid, fmt, path, extra, functools.partial(load, step_label)):
                return None
        summary = summarize_collapsed(raw.read_text())
        raw.unlink(missing_ok=True)
        return {
            "node_pid": pid,
            "flamegraph": svg.name,
            "seconds": round(time.monotonic() - started, 1),
            **summary,
        }


# With --native, py-spy counts a thread just woken inside the event loop's wait as busy: those
# samples say nothing about where the work goes.
WAITING_LEAVES = ("epoll_pwait ", "epoll_wait ")


def summarize_collapsed(text: str, top: int = 25) -> dict[str, Any]:
    """Self and total sample shares per function from py-spy's collapsed stacks."""
    total = waiting = 0
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        if frames and frames[-1].startswith(WAITING_LEAVES):
            waiting += count
            continue
        total += count
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count

    def ranked(table: dict[str, int], skip_everywhere: bool) -> list[tuple[str, float]]:
        # Frames on every stack (the event loop's run loop) say nothing: leave them out.
        useful = {k: v for k, v in table.items() if not skip_everywhere or v < 0.98 * total}
        best = sorted(useful.items(), key=lambda kv: kv[1], reverse=True)[:top]
        return [(name, round(100 * n / total, 1)) for name, n in best]

    return {
        "samples": total,
        "waiting_samples_left_out": waiting,
        "self_percent": ranked(own, False),
        "total_percent": ranked(inclusive, True),
    }


def _short(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    module = where.rsplit("/", 1)[-1].split(":", 1)[0]
    return f"{name} ({module})" if module else name


def ramp_bracket(
    best: dict[str, Any] | None, over: dict[str, Any] | None, search: RampSearch
) -> dict[str, Any]:
    """The true limit's bounds: at least what the last sustained step delivered, below the first
    rate not sustained (None: every rate was sustained, or the first one failed)."""
    return {
        "last_pass_target": search.last_pass,
        "last_pass_deliveries_per_s": best["deliveries_per_s"] if best else None,
        "first_fail_target": search.first_fail,
        "first_fail_deliveries_per_s": over["deliveries_per_s"] if over else None,
        "target_ratio": search.bracket_ratio(),
        "bisection_steps": search.bisections,
    }


def _ramp_stopped(over: dict[str, Any] | None, search: RampSearch) -> str:
    if over is None:
        return "all rates sustained (raise --ramp-max to find the limit)"
    p99 = over["latency_ms"]["p99"]
    stopped = (
        f"not sustained at {search.first_fail:,.0f} deliveries/s: p99 {p99 or 0:.1f} ms,"
        f" loss {over['loss']:.2%}"
    )
    ratio = search.bracket_ratio()
    if ratio is not None:
        stopped += (
            f"; sustained at {search.last_pass:,.0f}, {ratio:.3f}{TIMES} apart after"
            f" {search.bisections} bisection steps"
        )
    return stopped


def _step_line(label: str, r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    cpu = r["cpu_us_per_delivery"]
    p99 = lat["p99"]
    nodes = cpu.get("nodes")
    return (
        f"  {label}: {r['deliveries_per_s']:>9,.0f} del/s  loss {r['loss']:6.2%}"
        f"  p50 {lat['p50'] or 0:7.2f} ms  p99 {p99 or 0:8.2f} ms"
        f"  nodes {nodes or 0:6.2f} µs/del"
    )


def step_line(label: str, r: dict[str, Any]) -> str:
    return _step_line(label, r)
