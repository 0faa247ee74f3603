"""``python bench/run.py``: start the systems, run the scenarios, write JSON + PNG + a table."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from roomcast_bench import bigroom, floor, onenode, report, storm
from roomcast_bench.coordinator import BenchError, Generator, Progress
from roomcast_bench.scenarios import SMOKE_PLAN, Plan, Runner
from roomcast_bench.systems import (
    ADMISSION_OFF,
    BENCH_DIR,
    ROOMCAST_BENCH_ENV,
    System,
    baseline_unavailable,
    git_describe,
    remote_system,
    roomcast_source,
    start_system,
)
from roomcast_bench.worker import client_kind, raise_fd_limit

SCENARIOS = ("idle", "connect", "fanout", "ramp", "bigroom", "onenode", "storm")
# --smoke's storm is 60 clients: a low threshold so that it still crosses into a big room.
SMOKE_ROOMCAST_ENV = {"ROOMCAST_BIG_ROOM_MEMBERS": "20"}


def _version(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return (
        (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else None
    )


def machine_info(kind: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "client": kind,
        "node": _version(["node", "--version"]) if shutil.which("node") else None,
        "nginx": _version(["nginx", "-v"]) or _version(["/usr/sbin/nginx", "-v"]),
        "redis": _version(["redis-server", "--version"]),
    }
    if kind == "picows":
        import picows

        info["picows"] = getattr(picows, "__version__", None)
    try:
        with open("/proc/loadavg") as handle:
            info["loadavg_at_start"] = handle.read().split()[:3]
    except OSError:
        pass
    return info


def build_plan(args: argparse.Namespace) -> Plan:
    plan = dataclasses.replace(SMOKE_PLAN) if args.smoke else Plan()
    if args.scenarios:
        plan.scenarios = tuple(s for s in SCENARIOS if s in args.scenarios.split(","))
    if args.rooms is not None:
        plan.fanout_rooms = args.rooms
    if args.members is not None:
        plan.fanout_members = args.members
    if args.publishers is not None:
        plan.fanout_publishers = args.publishers
    if args.rate is not None:
        plan.fanout_rate = args.rate
    if args.seconds is not None:
        plan.fanout_seconds = args.seconds
    if args.ramp_seconds is not None:
        plan.ramp_seconds = args.ramp_seconds
    if args.ramp_rates is not None:
        plan.ramp_rates = tuple(sorted(float(r) for r in args.ramp_rates.split(",") if r))
    if args.ramp_max is not None:
        plan.ramp_rates = tuple(r for r in plan.ramp_rates if r <= args.ramp_max)
    if args.idle_connections is not None:
        plan.idle_connections = args.idle_connections
    if args.connect_count is not None:
        plan.connect_count = args.connect_count
    if args.bigroom_members is not None:
        plan.bigroom_members = args.bigroom_members
    if args.bigroom_deadline is not None:
        plan.bigroom_deadline = args.bigroom_deadline
    if args.storm_clients is not None:
        plan.storm_clients = args.storm_clients
    if args.storm_rate is not None:
        plan.storm_rate = args.storm_rate
    if args.profile:
        plan.profile_seconds = args.profile
    plan.count_syscalls = args.syscalls
    return plan


def build_onenode_plan(args: argparse.Namespace) -> onenode.OneNodePlan:
    plan = dataclasses.replace(onenode.SMOKE_ONENODE if args.smoke else onenode.OneNodePlan())
    if args.onenode_target is not None:
        plan.target = args.onenode_target
    return plan


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="roomcast benchmark: roomcast vs the article's Node.js server, same run.",
    )
    parser.add_argument("--smoke", action="store_true", help="seconds-long run with small rooms")
    parser.add_argument(
        "--servers", default="roomcast,baseline",
        help="comma list of roomcast, baseline (default both)",
    )  # fmt: skip
    parser.add_argument("--scenarios", help=f"comma list of {', '.join(SCENARIOS)} (default all)")
    parser.add_argument("--url", help="benchmark a running deployment (loopback) instead")
    parser.add_argument(
        "--pid", action="append", default=[], metavar="GROUP=PID[,PID]",
        help="with --url: processes to measure, e.g. nodes=123,124 nginx=200 redis=99",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=2, help="load-generator processes")
    parser.add_argument("--client", default="auto", choices=("auto", "picows", "websockets"))
    parser.add_argument("--rooms", type=int, help="rooms in fanout/ramp")
    parser.add_argument("--members", type=int, help="members per room in fanout/ramp")
    parser.add_argument("--publishers", type=int, help="publishers per room")
    parser.add_argument("--rate", type=float, help="fanout: aggregate deliveries/s")
    parser.add_argument("--seconds", type=float, help="fanout: measured seconds")
    parser.add_argument("--ramp-seconds", type=float, help="ramp: seconds per step")
    parser.add_argument("--ramp-max", type=float, help="ramp: highest rate to try")
    parser.add_argument(
        "--ramp-rates", metavar="R1,R2,...",
        help="ramp: the geometric steps' deliveries/s (a bisection follows the first failing one)",
    )  # fmt: skip
    parser.add_argument("--idle-connections", type=int)
    parser.add_argument("--connect-count", type=int)
    parser.add_argument("--bigroom-members", type=int, help="bigroom: clients in the join storm")
    parser.add_argument(
        "--bigroom-deadline", type=float, help="bigroom: seconds the storm may take (then cut)"
    )
    parser.add_argument(
        "--onenode-target", type=int, metavar="N",
        help="onenode: connections to open on one node (default: as many as its fd limit allows;"
        " a lower limit cuts it and the result says so)",
    )  # fmt: skip
    parser.add_argument("--storm-clients", type=int, help="storm: clients over the 3 nodes")
    parser.add_argument("--storm-rate", type=float, help="storm: messages/s over all rooms")
    parser.add_argument(
        "--profile", type=float, default=0.0, metavar="SECONDS",
        help="py-spy one roomcast node during an extra fan-out step of SECONDS and extra connect"
        " storms (profile.svg, profile-connect.svg)",
    )  # fmt: skip
    parser.add_argument(
        "--syscalls", action="store_true",
        help="count the nodes' system calls (perf stat) in an extra connect storm and fan-out"
        " step per server",
    )  # fmt: skip
    parser.add_argument(
        "--roomcast-rev", metavar="REV",
        help="run the roomcast nodes from git revision REV (e.g. HEAD) instead of the work tree",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="results folder")
    parser.add_argument("--name", help="result file stem (default bench-/smoke-<timestamp>)")
    parser.add_argument("--quiet", action="store_true", help="no live progress line")
    return parser.parse_args(argv)


def _pid_groups(specs: list[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for spec in specs:
        name, _, pids = spec.partition("=")
        groups.setdefault(name, []).extend(int(p) for p in pids.split(",") if p)
    return groups


def run_scenario(runner: Runner, scenario: str, system: System, via: str | None) -> dict[str, Any]:
    progress = runner.progress
    name = system.name
    if scenario == "fanout":
        entry = runner.fanout(system, via or "direct")
        progress.log(report.step_summary(entry))
    elif scenario == "ramp":
        entry = runner.ramp(system)
        progress.log(
            f"  {name} ramp: highest sustainable "
            f"{entry['max_sustainable_deliveries_per_s']:,.0f} deliveries/s ({entry['stopped']})"
        )
    elif scenario == "idle":
        entry = runner.idle(system)
        progress.log(
            f"  {name} idle: {entry['connections']:,} connections,"
            f" {entry['kib_per_connection']:.2f} KiB node RSS each"
        )
    elif scenario == "bigroom":
        entry = bigroom.run(runner, system)
        progress.log(bigroom.summary(entry))
    elif scenario == "storm":
        entry = storm.run(runner, system)
    else:
        entry = runner.connect(system)
        cpu = entry["cpu_us_per_setup"].get("nodes")
        progress.log(
            f"  {name} connect: {entry['setups_per_s']:,.0f} setups/s,"
            f" nodes {cpu or 0:,.0f} µs CPU per setup"
        )
    return entry


def _run_onenode(
    args: argparse.Namespace,
    plan: Plan,
    servers: list[str],
    kind: str,
    progress: Progress,
    roomcast_path: Path | None,
    result: dict[str, Any],
) -> None:
    available = []
    for name in servers:
        reason = baseline_unavailable() if name == "baseline" else None
        if reason:
            result["skipped"]["baseline"] = reason
            progress.log(f"baseline skipped: {reason}")
        else:
            available.append(name)
    result["scenarios"] += onenode.run_servers(
        available, build_onenode_plan(args), plan, kind, progress, args.out, roomcast_path
    )


def _write_floor(plan: Plan, progress: Progress) -> dict[str, Any]:
    """Bare socket writes at the fan-out's rate and room share, just before the fan-out."""
    progress.update("write floor: bare socket writes at the fan-out's rate", force=True)
    measured = floor.measure(plan.fanout_members, plan.fanout_rate, plan.fanout_seconds)
    if "error" in measured:
        progress.log(f"  write floor: {measured['error']}")
    else:
        progress.log(
            f"  write floor: {measured['cpu_us_per_delivery']:.2f} µs CPU per delivery"
            f" ({measured['recipients']} sockets, {measured['messages_per_s']:g} messages/s)"
        )
    return measured


def run(args: argparse.Namespace) -> dict[str, Any]:
    limit = raise_fd_limit()
    kind = client_kind(args.client)
    plan = build_plan(args)
    progress = Progress(quiet=args.quiet)
    args.out.mkdir(parents=True, exist_ok=True)
    servers = [s for s in args.servers.split(",") if s]
    result: dict[str, Any] = {
        "version": 1,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "mode": "smoke" if args.smoke else "full",
        "machine": machine_info(kind),
        "workers": args.workers,
        "fd_limit": limit,
        "plan": {k: v for k, v in dataclasses.asdict(plan).items() if k != "extra"},
        "roomcast_env": {},
        "skipped": {},
        "scenarios": [],
    }
    systems: dict[str, System] = {}
    started = time.monotonic()
    generator: Generator | None = None
    scratch = Path(tempfile.mkdtemp(prefix="roomcast-bench-"))
    roomcast_path = None
    if args.roomcast_rev and not args.url:
        roomcast_path = roomcast_source(args.roomcast_rev, scratch)
    result["roomcast_source"] = git_describe(args.roomcast_rev)
    try:
        # Only with the bigroom scenario: a room past the threshold announces no user_joined,
        # which is how the connect scenario sees a setup done (a bigger --connect-count than
        # smoke's crosses 20 members a room).
        big = args.smoke and "bigroom" in plan.scenarios
        extra_env = SMOKE_ROOMCAST_ENV if big else {}
        if "onenode" in plan.scenarios and not args.url:
            # First, on a machine where nothing of this run is started yet: one node at a time.
            _run_onenode(args, plan, servers, kind, progress, roomcast_path, result)
        others = [s for s in plan.scenarios if s != "onenode"]
        if args.url:
            systems["target"] = remote_system(args.url, _pid_groups(args.pid))
        elif others:
            for name in servers:
                if name == "baseline":
                    reason = baseline_unavailable()
                    if reason:
                        result["skipped"]["baseline"] = reason
                        progress.log(f"baseline skipped: {reason}")
                        continue
                progress.update(f"starting {name}: redis + 3 nodes + nginx", force=True)
                systems[name] = start_system(name, roomcast_path=roomcast_path, env=extra_env)
            if "roomcast" in systems:
                result["roomcast_env"] = {**ROOMCAST_BENCH_ENV, **ADMISSION_OFF, **extra_env}
        generator = Generator(args.workers, kind, progress) if systems else None
        runner = Runner(generator, plan, args.out) if generator is not None else None
        # Scenario by scenario, each server in turn, so noise from other users of the machine
        # hits both alike. Idle first: node RSS is read on nodes that have not served load yet.
        for scenario in others:
            if scenario == "fanout" and not args.url:
                result["write_floor"] = _write_floor(plan, progress)
            vias = plan.fanout_vias if scenario == "fanout" else (None,)
            for via in vias:
                for system in systems.values():
                    assert runner is not None  # there are systems
                    entry = run_scenario(runner, scenario, system, via)
                    result["scenarios"].append(entry)
    finally:
        if generator is not None:
            generator.close()
        for system in systems.values():
            system.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    result["seconds"] = round(time.monotonic() - started, 1)
    result["targets"] = report.targets(result) if not args.url else []
    return result


def _stop_on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM or SIGINT (even when started in the background, where SIGINT is ignored) unwind
    # through the finally blocks, which stop every process this run started.
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGINT, _stop_on_signal)
    try:
        result = run(args)
    except (BenchError, ValueError, RuntimeError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("benchmark interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    stem = args.name or f"{'smoke' if args.smoke else 'bench'}-{stamp}"
    json_path = args.out / f"{stem}.json"
    json_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    png = report.plot(result, args.out / f"{stem}.png")
    onenode_png = onenode.plot(result, args.out / f"{stem}-onenode.png")
    storm_png = storm.plot(result, args.out / f"{stem}-storm.png")
    table = report.markdown(result)
    (args.out / f"{stem}.md").write_text(f"Command: `{result['command']}`\n\n{table}\n")
    print(table)
    print(f"results: {json_path}")
    if png is not None:
        print(f"plot:    {png}")
    else:
        print(
            "plot:    skipped (matplotlib is not installed: pip install -r bench/requirements.txt)"
        )
    if onenode_png is not None:
        print(f"plot:    {onenode_png}")
    if storm_png is not None:
        print(f"storm:   {storm_png}")
    for name, reason in result["skipped"].items():
        print(f"{name} skipped: {reason}")
    return 0
