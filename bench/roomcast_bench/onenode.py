"""The ``onenode`` scenario: as many connections as one node's file descriptors allow.

One node reached directly (no nginx), filled from many loopback source addresses by as many
generator processes as the count needs (each holds at most ``per_worker`` clients, under its own
RLIMIT_NOFILE). It reports the connect rate while filling (connections over time, node RSS over
connections), node RSS per connection, the node's CPU at rest over whole heartbeat intervals
(as a share of a core, and per connection per interval, so it extrapolates), and the fan-out
latency at a fixed delivery rate while the node holds them all.

The size is the node's soft RLIMIT_NOFILE less the descriptors it already has and a margin, read
at run time; ``--onenode-target`` asks for more (a machine with a higher limit can run 100,000),
and the figure says when the limit cut it. Figures at 100,000 connections are extrapolated from
the per-connection costs, and named as such.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roomcast_dev.devcluster import LocalCluster

from roomcast_bench.coordinator import BenchError, Generator, Progress
from roomcast_bench.procstat import CpuWindow, rss_kib
from roomcast_bench.scenarios import Plan, Runner
from roomcast_bench.systems import ADMISSION_OFF, ROOMCAST_BENCH_ENV, BaselineCluster, System

# Descriptors left to the node beyond what it holds at rest: Redis reconnects, a metrics scrape,
# roomcast's own reserve for refusing over-limit handshakes cleanly (ROOMCAST_MAX_CONNECTIONS).
FD_MARGIN = 300
# The size; figures for it are extrapolated when the fd limit stops the fill below it.
EXTRAPOLATE_TO = 100_000
# The article's server pings every 30 s (setInterval in bench/baseline/server.js).
BASELINE_PING_INTERVAL = 30.0
# Share of the members that may miss every readiness probe before the run fails.
MAY_MISS_PROBES = 0.005
# Connection samples while filling: one per progress report, about every 0.25 s.
RATE_WINDOW_SECONDS = 1.0


@dataclass
class OneNodePlan:
    target: int = 0  # connections; 0: as many as the node's fd limit allows
    room_size: int = 100  # members per room; one of them publishes
    rate: float = 10_000.0  # deliveries/s during the fan-out step
    fanout_seconds: float = 30.0  # one whole heartbeat round at the default interval
    warmup_seconds: float = 2.0
    ping_interval: float = 30.0  # roomcast's default (ROOMCAST_PING_INTERVAL)
    idle_intervals: int = 1  # heartbeat intervals measured at rest
    idle_seconds_max: float = 600.0  # ... but no longer (the smoke run's baseline pings at 30 s)
    empty_seconds: float = 10.0  # the node's CPU at rest before any client
    per_worker: int = 9_000  # clients per generator process (each under its own fd limit)
    # Handshakes in flight per generator process: all of them together stay under the
    # baseline's listen backlog (Node's default, 511), or its SYNs are dropped and retried.
    concurrency: int = 50
    connect_timeout: float = 60.0


SMOKE_ONENODE = OneNodePlan(
    target=300,
    room_size=10,
    rate=500.0,
    fanout_seconds=2.0,
    warmup_seconds=0.5,
    ping_interval=1.0,
    idle_intervals=2,
    idle_seconds_max=2.0,
    empty_seconds=1.0,
    per_worker=200,
    concurrency=20,
)


def fd_room(pid: int) -> tuple[int, int]:
    """(soft RLIMIT_NOFILE, descriptors open now) of process ``pid``."""
    soft = 0
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            value = line.split()[3]
            soft = 1 << 30 if value == "unlimited" else int(value)
    return soft, len(os.listdir(f"/proc/{pid}/fd"))


def start_one(name: str, ping_interval: float, roomcast_path: Path | None) -> System:
    """redis-server + one node of ``name``, reached directly."""
    cluster: LocalCluster
    if name == "roomcast":
        # Admission off, as in the other scenarios but storm: the fill measures setups at full
        # speed (the node-wide admission rate would pace it at 1,000/s).
        env = {**ROOMCAST_BENCH_ENV, **ADMISSION_OFF}
        env["ROOMCAST_PING_INTERVAL"] = str(ping_interval)
        if roomcast_path is not None:
            env["PYTHONPATH"] = str(roomcast_path)
        cluster = LocalCluster(1, redis=True, nginx=False, node_env=env)
    else:
        cluster = BaselineCluster(1, redis=True, nginx=False)
    cluster.start()
    return System(
        name=name,
        node_urls=[cluster.nodes[0].url],
        nginx_url=None,
        pid_groups={
            "nodes": [cluster.nodes[0].process.pid],
            "redis": [cluster.redis.pid] if cluster.redis is not None else [],
        },
        cluster=cluster,
    )


def accept_queue(port: int) -> tuple[int, int] | None:
    """(connections waiting for accept(), backlog) of the listener on ``port`` (``ss``)."""
    try:
        out = subprocess.run(
            ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, timeout=5,
            check=False,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1].isdigit() and fields[2].isdigit():
            return int(fields[1]), int(fields[2])
    return None


def _metric_samples(url: str, prefix: str) -> dict[str, float]:
    """Prometheus samples whose name starts with ``prefix``; {} when unreachable."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
            text = response.read().decode()
    except OSError:
        return {}
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            name, _, value = line.rpartition(" ")
            try:
                samples[name] = float(value)
            except ValueError:
                continue
    return samples


class OneNode:
    """Runs the scenario against one server at a time."""

    def __init__(
        self, plan: OneNodePlan, base: Plan, kind: str, progress: Progress, out: Path
    ) -> None:
        self.plan = plan
        self.base = base
        self.kind = kind
        self.progress = progress
        self.out = out

    def run(self, name: str, roomcast_path: Path | None = None) -> dict[str, Any]:
        plan = self.plan
        interval = plan.ping_interval if name == "roomcast" else BASELINE_PING_INTERVAL
        self.progress.update(f"onenode: starting redis + one {name} node", force=True)
        system = start_one(name, plan.ping_interval, roomcast_path)
        generator: Generator | None = None
        try:
            pid = system.node_pids[0]
            soft, open_at_rest = fd_room(pid)
            allowed = max(0, soft - open_at_rest - FD_MARGIN)
            wanted = plan.target or allowed
            count = min(wanted, allowed)
            rooms = max(1, count // plan.room_size)
            count = rooms * plan.room_size
            workers = max(1, math.ceil(count / plan.per_worker))
            generator = Generator(workers, self.kind, self.progress)
            runner = Runner(generator, dataclasses.replace(self.base), self.out)
            entry: dict[str, Any] = {
                "scenario": "onenode",
                "server": name,
                "via": "direct",
                "fd_limit": soft,
                "fds_at_rest": open_at_rest,
                "requested": wanted,
                "connections": count,
                "limited_by_fd_limit": wanted > allowed,
                "room_size": plan.room_size,
                "rooms": rooms,
                "generator_workers": workers,
                "ping_interval_s": interval,
                "plan": dataclasses.asdict(plan),
            }
            self._measure(entry, system, generator, runner, interval)
        finally:
            if generator is not None:
                generator.close()
            system.stop()
        return entry

    def _measure(
        self,
        entry: dict[str, Any],
        system: System,
        gen: Generator,
        runner: Runner,
        interval: float,
    ) -> None:
        plan = self.plan
        name = system.name
        pid = system.node_pids[0]
        node = system.cluster.nodes[0] if system.cluster is not None else None
        metrics_url = node.metrics_url if node is not None and name == "roomcast" else None
        runner._quiesce([pid])
        self.progress.update(f"onenode {name}: CPU at rest, no clients ({plan.empty_seconds} s)")
        empty = self._cpu_at_rest(pid, plan.empty_seconds)
        rss_before = rss_kib(pid)
        gc_before = _metric_samples(metrics_url, "roomcast_gc_") if metrics_url else {}
        sizes, fill = self._fill(system, gen, entry["connections"], entry["rooms"])
        runner._quiesce([pid], limit=30.0)
        rss_after = rss_kib(pid)
        status = gen.call("status", timeout=30)
        still_open = sum(s["open"] for s in status)
        count = entry["connections"]
        idle_seconds = min(plan.idle_intervals * interval, plan.idle_seconds_max)
        self.progress.update(
            f"onenode {name}: CPU at rest with {count:,} connections ({idle_seconds:.0f} s)"
        )
        idle = self._cpu_at_rest(pid, idle_seconds)
        # The heartbeat is what a held connection costs at rest: the CPU above the empty
        # node's, per connection and per heartbeat interval.
        extra = max(0.0, idle["cores"] - empty["cores"])
        per_conn_interval_us = extra * interval * 1e6 / count if count else None
        label = f"onenode {name}"
        if plan.warmup_seconds > 0:
            runner.step(system, sizes, 0, plan.rate, plan.warmup_seconds, label + " warm-up")
        step = runner.step(system, sizes, 1, plan.rate, plan.fanout_seconds, label)
        gc_after = _metric_samples(metrics_url, "roomcast_gc_") if metrics_url else {}
        runner.close()
        kib_per_conn = (rss_after - rss_before) / count if count else None
        entry.update(
            {
                "open_at_measurement": still_open,
                "fill": fill,
                "node_rss_kib_before": rss_before,
                "node_rss_kib_after": rss_after,
                "kib_per_connection": kib_per_conn,
                "cpu_at_rest_empty": empty,
                "cpu_at_rest_full": idle,
                "heartbeat_cpu_us_per_connection_per_interval": per_conn_interval_us,
                "steps": [step],
                "gc": _gc_figures(gc_before, gc_after),
                "extrapolated": _extrapolate(
                    rss_before,
                    kib_per_conn,
                    empty["cores"],
                    per_conn_interval_us,
                    interval,
                    entry["fd_limit"],
                ),
            }
        )
        self.progress.log(summary_line(entry))

    @staticmethod
    def _cpu_at_rest(pid: int, seconds: float) -> dict[str, Any]:
        window = CpuWindow({"nodes": [pid]}).start()
        started = time.monotonic()
        time.sleep(seconds)
        wall = time.monotonic() - started
        cpu = window.stop()["nodes"]
        share = window.system_share()["nodes"]
        return {
            "seconds": round(wall, 3),
            "system_cpu_share": None if share is None else round(share, 3),
            "cpu_seconds": round(cpu, 4),
            "cores": cpu / wall if wall else 0.0,
            "other_cores_busy": round(window.other / wall, 3) if wall else 0.0,
        }

    def _fill(
        self, system: System, gen: Generator, count: int, rooms: int
    ) -> tuple[dict[str, int], dict[str, Any]]:
        """Open and join ``count`` clients, sampling connections and node RSS as they come."""
        plan = self.plan
        pid = system.node_pids[0]
        url = system.node_urls[0]
        per_worker: list[list[dict[str, Any]]] = [[] for _ in range(gen.size)]
        sizes: dict[str, int] = {}
        cid = 0
        for r in range(rooms):
            room = f"one-{r}"
            sizes[room] = plan.room_size
            for m in range(plan.room_size):
                # Members of a room over every worker; its first member publishes.
                per_worker[(m + r) % gen.size].append(
                    {"cid": cid, "room": room, "url": url, "publisher": m == 0}
                )
                cid += 1
        samples: list[tuple[float, int, int]] = []
        port = urllib.parse.urlsplit(url).port or 0
        queue = {"max": 0, "backlog": 0, "read": 0.0}
        window = CpuWindow({"nodes": [pid]}).start()
        started = time.monotonic()

        def show(latest: list[dict[str, Any]]) -> str:
            connected = sum(r.get("connected", 0) for r in latest)
            failed = sum(r.get("failed", 0) for r in latest)
            elapsed = time.monotonic() - started
            if not samples or elapsed - samples[-1][0] >= 0.2:
                samples.append((round(elapsed, 3), connected, rss_kib(pid)))
            if elapsed - queue["read"] >= 1.0:
                queue["read"] = elapsed
                waiting = accept_queue(port)
                if waiting is not None:
                    queue["max"] = max(queue["max"], waiting[0])
                    queue["backlog"] = waiting[1]
            return (
                f"onenode {system.name}: {connected:,}/{count:,} open, {failed} failed,"
                f" {connected / max(elapsed, 1e-9):,.0f}/s"
            )

        replies = gen.call(
            "connect",
            [
                {"clients": w, "concurrency": plan.concurrency, "timeout": plan.connect_timeout}
                for w in per_worker
            ],
            # Generous: a shared machine under load fills at tens of connections per second.
            timeout=120 + count / 20,
            show=show,
        )
        seconds = time.monotonic() - started
        node_cpu = window.stop()["nodes"]
        connected = sum(r["connected"] for r in replies)
        samples.append((round(seconds, 3), connected, rss_kib(pid)))
        failed = sum(r["failed"] for r in replies)
        if failed:
            errors = [e for r in replies for e in r.get("errors", [])]
            raise BenchError(f"onenode {system.name}: {failed} of {count} failed: {errors[:3]}")
        ready = self._await_joins(system.name, gen, count)
        return sizes, {
            "joined": ready,
            "seconds": round(seconds, 3),
            "connect_rate_per_s": connected / seconds if seconds else 0.0,
            "peak_rate_per_s": _peak_rate(samples),
            "node_cpu_us_per_connect": node_cpu * 1e6 / connected if connected else None,
            # The node's listener, read about once a second: how close the fill came to it.
            "accept_queue_max": int(queue["max"]),
            "listen_backlog": int(queue["backlog"]),
            "samples": samples,  # (seconds, connections open, node RSS KiB)
        }

    def _await_joins(self, name: str, gen: Generator, count: int) -> int:
        """Every member saw a probe from its room: its join is done and its node hears it.

        On a loaded machine a few may never see one (a client starved past its pings): up to
        MAY_MISS_PROBES of them is reported (``joined``, and as loss in the fan-out) rather than
        failing the run."""
        ready = 0
        for round_no in range(1, 21):
            replies = gen.call(
                "probe", {"round": round_no, "quiet": self.base.quiet, "limit": 10.0},
                timeout=60,
            )  # fmt: skip
            ready = sum(r["ready"] for r in replies)
            self.progress.update(f"onenode {name}: {ready:,}/{count:,} joined (probe {round_no})")
            if ready >= count:
                return ready
        if count - ready <= count * MAY_MISS_PROBES:
            return ready
        raise BenchError(f"onenode {name}: only {ready} of {count} members ever saw a probe")


def _peak_rate(samples: list[tuple[float, int, int]]) -> float:
    """The highest connections/s over any RATE_WINDOW_SECONDS of the fill."""
    best = 0.0
    start = 0
    for end in range(len(samples)):
        while samples[end][0] - samples[start][0] > RATE_WINDOW_SECONDS and start < end:
            start += 1
        span = samples[end][0] - samples[start][0]
        if span >= RATE_WINDOW_SECONDS / 2:
            best = max(best, (samples[end][1] - samples[start][1]) / span)
    return best


def _gc_figures(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Garbage-collector passes and their longest pause during the run, per generation."""
    figures: dict[str, Any] = {}
    for generation in ("0", "1", "2"):
        label = f'{{generation="{generation}"}}'
        count_key = f"roomcast_gc_pause_seconds_count{label}"
        if count_key not in after:
            continue
        figures[f"gen{generation}"] = {
            "collections": int(after[count_key] - before.get(count_key, 0.0)),
            "pause_seconds_total": after.get(f"roomcast_gc_pause_seconds_sum{label}", 0.0)
            - before.get(f"roomcast_gc_pause_seconds_sum{label}", 0.0),
            "max_pause_ms_since_start": after.get(f"roomcast_gc_pause_max_seconds{label}", 0.0)
            * 1e3,
        }
    return figures


def _extrapolate(
    rss_empty_kib: int,
    kib_per_conn: float | None,
    empty_cores: float,
    per_conn_interval_us: float | None,
    interval: float,
    fd_limit: int,
) -> dict[str, Any]:
    """Per-connection costs measured here, times EXTRAPOLATE_TO: an estimate, not a run."""
    n = EXTRAPOLATE_TO
    return {
        "connections": n,
        "why": f"RLIMIT_NOFILE is {fd_limit:,} per process here: one node cannot hold {n:,}",
        "node_rss_mib": (rss_empty_kib + kib_per_conn * n) / 1024 if kib_per_conn else None,
        "cpu_at_rest_core_share": (
            empty_cores + per_conn_interval_us * n / interval / 1e6
            if per_conn_interval_us is not None
            else None
        ),
    }


def summary_line(entry: dict[str, Any]) -> str:
    step = entry["steps"][0]
    fill = entry["fill"]
    extra = entry["extrapolated"]
    share = extra["cpu_at_rest_core_share"]
    p99 = step["latency_ms"]["p99"]
    return (
        f"  {entry['server']} onenode: {entry['connections']:,} connections"
        f" (fd limit {entry['fd_limit']:,}) at {fill['connect_rate_per_s']:,.0f}/s,"
        f" {entry['kib_per_connection'] or 0:.2f} KiB each,"
        f" at rest {entry['cpu_at_rest_full']['cores']:.2%} of a core"
        f" ({entry['heartbeat_cpu_us_per_connection_per_interval'] or 0:.2f} µs/conn/interval;"
        f" {EXTRAPOLATE_TO:,}: {share or 0:.2%} extrapolated),"
        f" p99 {p99 or 0:.2f} ms at {step['deliveries_per_s']:,.0f} deliveries/s"
    )


def run_servers(
    servers: list[str],
    plan: OneNodePlan,
    base: Plan,
    kind: str,
    progress: Progress,
    out: Path,
    roomcast_path: Path | None,
) -> list[dict[str, Any]]:
    scenario = OneNode(plan, base, kind, progress, out)
    entries: list[dict[str, Any]] = []
    for name in servers:
        try:
            entries.append(scenario.run(name, roomcast_path))
        except BenchError as exc:
            # One server failing (the baseline's handshakes timing out) keeps the other's figures.
            progress.log(f"  {name} onenode failed: {exc}")
            entries.append(
                {"scenario": "onenode", "server": name, "via": "direct", "error": str(exc)}
            )
    return entries


def markdown_lines(result: dict[str, Any]) -> list[str]:
    entries = _measured(result)
    failed = [e for e in result.get("scenarios", []) if e["scenario"] == "onenode" and "error" in e]
    if not entries and not failed:
        return []
    lines = [
        "| onenode | connections | fd limit | connects/s (peak) | KiB/connection"
        " | at rest, % of a core | heartbeat µs/conn/interval | p99 ms at del/s | max gen2 pause ms"
        f" | {EXTRAPOLATE_TO:,}: RSS MiB | {EXTRAPOLATE_TO:,}: % of a core at rest |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in entries:
        step = e["steps"][0]
        fill = e["fill"]
        extra = e["extrapolated"]
        gen2 = e.get("gc", {}).get("gen2", {})
        pause = gen2.get("max_pause_ms_since_start")
        share = extra["cpu_at_rest_core_share"]
        rss = extra["node_rss_mib"]
        lines.append(
            f"| {e['server']} | {e['connections']:,} | {e['fd_limit']:,}"
            f" | {fill['connect_rate_per_s']:,.0f} ({fill['peak_rate_per_s']:,.0f})"
            f" | {_num(e['kib_per_connection'])}"
            f" | {e['cpu_at_rest_full']['cores'] * 100:.2f}"
            f" | {_num(e['heartbeat_cpu_us_per_connection_per_interval'])}"
            f" | {_num(step['latency_ms']['p99'])} at {step['deliveries_per_s']:,.0f}"
            f" | {_num(pause)} | {_num(rss, 0)} | {_num(None if share is None else share * 100)} |"
        )
    lines += [
        "",
        f"_{EXTRAPOLATE_TO:,}-connection columns are extrapolated from the per-connection figures"
        " measured at the fill above: one process cannot open more descriptors than its fd"
        " limit._",
        "",
    ]
    lines += [f"onenode {e['server']} failed: {e['error']}" for e in failed]
    return lines


def _measured(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        e for e in result.get("scenarios", []) if e["scenario"] == "onenode" and "error" not in e
    ]


def _num(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def plot(result: dict[str, Any], path: Path) -> Path | None:
    """Connections over time while filling, and node RSS over connections, per server."""
    entries = _measured(result)
    if not entries:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (ax_fill, ax_rss) = plt.subplots(1, 2, figsize=(11, 4))
    for e in entries:
        samples = e["fill"]["samples"]
        times = [s[0] for s in samples]
        conns = [s[1] for s in samples]
        rss = [s[2] / 1024 for s in samples]
        ax_fill.plot(times, conns, label=e["server"])
        ax_rss.plot(conns, rss, label=e["server"])
    ax_fill.set_xlabel("seconds since the fill started")
    ax_fill.set_ylabel("connections open (one node)")
    ax_fill.set_title("filling one node")
    ax_rss.set_xlabel("connections open")
    ax_rss.set_ylabel("node RSS (MiB)")
    ax_rss.set_title("node memory while filling")
    for ax in (ax_fill, ax_rss):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
