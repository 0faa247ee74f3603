"""The capacity model against measured points: the benchmark's fan-out scenario at a room size
and rates the unit costs were not measured at, on this machine. About 40 s a rate:

    .venv/bin/python bench/capacity_check.py [--rooms 20] [--members 25] [--rate 5000 30000]

The unit costs are measured at low rates, where every frame is its own ``write()`` and every
message its own loop turn; the second, busier rate shows how far the model overestimates a
node (and Redis) once frames and commands meet in one write.

It runs ``bench/run.py --servers roomcast --scenarios fanout`` (3 nodes, nodes direct and
through nginx), asks ``roomcast.admin.capacity.steady_cores`` what the same load costs with 3
nodes, and compares each tier's predicted cores with the measured ones. Writes
results/capacity_check.json and results/capacity_check.md; docs/capacity.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from capacity_costs import PAGE, replace_section

from roomcast.admin.capacity import Deployment, UnitCosts, steady_cores, subscribing_nodes
from roomcast.admin.capacity_costs import MEASURED, SOURCE

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
NODES = 3  # the benchmark's cluster


def run_fanout(args: argparse.Namespace, rate: float, out: Path) -> dict[str, Any]:
    command = [
        sys.executable, str(HERE / "run.py"), "--servers", "roomcast", "--scenarios", "fanout",
        "--rooms", str(args.rooms), "--members", str(args.members), "--rate", str(rate),
        "--seconds", str(args.seconds), "--out", str(out), "--name", "check", "--quiet",
    ]  # fmt: skip
    subprocess.run(command, check=True)
    return dict(json.loads((out / "check.json").read_text()))


def compare(result: dict[str, Any], costs: UnitCosts) -> list[dict[str, Any]]:
    rows = []
    for scenario in result["scenarios"]:
        step = scenario["steps"][0]
        messages_per_second = step["messages_sent"] / step["seconds"]
        load = Deployment(
            connections=scenario["connections"],
            rooms=scenario["rooms"],
            messages_per_second=messages_per_second,
            room_size=scenario["members_per_room"],
            deliveries_per_second=step["deliveries_per_s"],
            session_seconds=1e12,  # no setups during the measured window
        )
        predicted = steady_cores(load, costs, NODES)
        tiers = ("nodes", "redis") if scenario["via"] == "direct" else ("nodes", "nginx", "redis")
        for tier in tiers:
            measured = step["cpu_seconds"][tier] / step["seconds"]
            guess = getattr(predicted, tier)
            rows.append(
                {
                    "via": scenario["via"],
                    "tier": tier,
                    "messages_per_second": round(messages_per_second, 1),
                    "deliveries_per_second": round(step["deliveries_per_s"], 1),
                    "subscribing_nodes": round(
                        subscribing_nodes(NODES, scenario["members_per_room"]), 2
                    ),
                    "predicted_cores": round(guess, 4),
                    "measured_cores": round(measured, 4),
                    "error": round(guess / measured - 1, 3) if measured > 0 else None,
                    "other_cores_busy": step["other_cores_busy"],
                }
            )
    return rows


def report(rows: list[dict[str, Any]], args: argparse.Namespace, when: str) -> str:
    rates = " ".join(f"{rate:g}" for rate in args.rate)
    lines = [
        "# The capacity model against a measured point",
        "",
        f"`bench/capacity_check.py --rooms {args.rooms} --members {args.members} --rate"
        f" {rates} --seconds {args.seconds:g}`, {when}: the benchmark's fan-out scenario"
        f" (3 nodes, rooms of {args.members}, at {rates} deliveries/s in turn) against"
        f" `roomcast.admin.capacity.steady_cores` with the unit costs of {SOURCE}.",
        "",
        "| via | tier | messages/s | deliveries/s | predicted cores | measured cores | error |"
        " other load (cores) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        error = "n/a" if row["error"] is None else f"{row['error']:+.0%}"
        lines.append(
            f"| {row['via']} | {row['tier']} | {row['messages_per_second']:,.0f} |"
            f" {row['deliveries_per_second']:,.0f} | {row['predicted_cores']:.3f} |"
            f" {row['measured_cores']:.3f} | {error} | {row['other_cores_busy']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--members", type=int, default=25)
    parser.add_argument(
        "--rate", type=float, nargs="+", default=[5000.0, 30000.0], help="deliveries/s in all"
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--output", type=Path, default=RESULTS / "capacity_check")
    args = parser.parse_args(argv)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    costs = UnitCosts.from_mapping(MEASURED)
    rows: list[dict[str, Any]] = []
    for rate in args.rate:
        print(f"fan-out at {rate:g} deliveries/s", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="capacity-check-") as folder:
            result = run_fanout(args, rate, Path(folder))
        rows += compare(result, costs)
    text = report(rows, args, when)
    args.output.with_suffix(".json").write_text(
        json.dumps(
            {"when": when, "costs": SOURCE, "machine": result["machine"], "rows": rows}, indent=2
        )
        + "\n"
    )
    args.output.with_suffix(".md").write_text(text)
    if args.output == RESULTS / "capacity_check":
        # The page has its own heading: everything below the report's title.
        replace_section(PAGE, "capacity-check", text.split("\n\n", 1)[1])
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
