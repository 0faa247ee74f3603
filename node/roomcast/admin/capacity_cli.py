"""``roomcast capacity``: size a deployment from its load (docs/capacity.md)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from roomcast.admin.capacity import GIB, Deployment, UnitCosts, plan, render
from roomcast.admin.capacity_costs import MEASURED, SOURCE

HELP_LINE = "size a deployment: node processes, nginx cores, Redis shards and memory"
DESCRIPTION = (
    "Computes how many node processes, machines, nginx cores and Redis shards carry a load, "
    "from unit costs measured by the benchmark (or --costs FILE), and prints each figure's "
    "derivation and the constraint that binds it."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    load = parser.add_argument_group("load")
    load.add_argument("--connections", type=int, required=True, help="connections held at once")
    load.add_argument("--rooms", type=int, required=True, help="rooms with members")
    load.add_argument("--messages-per-second", type=float, required=True, help="in all rooms")
    load.add_argument("--room-size", type=float, help="mean members; default connections/rooms")
    load.add_argument("--deliveries-per-second", type=float, help="default messages/s x room size")
    load.add_argument(
        "--nodes-per-room",
        type=float,
        help="nodes a room's members are on (1 if the balancer keeps a room on one node); "
        "default: members placed at random",
    )
    load.add_argument("--message-bytes", type=int, default=100, help="text of a message")
    load.add_argument(
        "--history", type=int, default=100, help="messages kept per room (ROOMCAST_HISTORY_SIZE)"
    )
    load.add_argument("--history-ttl", type=float, default=600.0, help="ROOMCAST_HISTORY_TTL, s")
    load.add_argument(
        "--history-bytes", type=int, default=2 * 1024 * 1024, help="ROOMCAST_HISTORY_BYTES"
    )
    load.add_argument(
        "--session-minutes", type=float, default=30.0, help="mean connection lifetime (churn)"
    )
    load.add_argument(
        "--storm-seconds",
        type=float,
        default=60.0,
        help="a lost node's clients are all back on the others within this",
    )
    machines = parser.add_argument_group("machines")
    machines.add_argument(
        "--cpu-target", type=float, default=0.6, help="steady share of a core to use (0-1]"
    )
    machines.add_argument(
        "--cores-per-machine", type=int, default=8, help="node processes per machine"
    )
    machines.add_argument("--machine-memory-gib", type=float, default=16.0)
    machines.add_argument(
        "--memory-target", type=float, default=0.7, help="share of a machine's memory for nodes"
    )
    machines.add_argument("--fd-limit", type=int, default=65536, help="a node's RLIMIT_NOFILE")
    machines.add_argument(
        "--shard-memory-gib", type=float, default=4.0, help="a Redis shard's maxmemory"
    )
    parser.add_argument(
        "--costs",
        type=Path,
        metavar="FILE",
        help="JSON object of unit costs replacing the measured ones (any subset; "
        "--show-costs prints them all)",
    )
    parser.add_argument("--show-costs", action="store_true", help="print the unit costs used")


def _costs(path: Path | None) -> tuple[UnitCosts, str]:
    values = dict(MEASURED)
    origin = SOURCE
    if path is not None:
        given = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(given, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in given.values()
        ):
            raise ValueError(f"{path}: a JSON object of numbers")
        values.update({str(k): float(v) for k, v in given.items()})
        origin = f"{path} over {SOURCE}"
    return UnitCosts.from_mapping(values), origin


def deployment_of(args: argparse.Namespace) -> Deployment:
    return Deployment(
        connections=args.connections,
        rooms=args.rooms,
        messages_per_second=args.messages_per_second,
        room_size=args.room_size,
        deliveries_per_second=args.deliveries_per_second,
        nodes_per_room=args.nodes_per_room,
        message_bytes=args.message_bytes,
        history_size=args.history,
        history_ttl=args.history_ttl,
        history_bytes=args.history_bytes,
        session_seconds=args.session_minutes * 60,
        storm_seconds=args.storm_seconds,
        cpu_target=args.cpu_target,
        cores_per_machine=args.cores_per_machine,
        machine_memory_bytes=int(args.machine_memory_gib * GIB),
        memory_target=args.memory_target,
        fd_limit=args.fd_limit,
        shard_memory_bytes=int(args.shard_memory_gib * GIB),
    )


def run(args: argparse.Namespace) -> int:
    try:
        costs, origin = _costs(args.costs)
        deployment = deployment_of(args)
        result = plan(deployment, costs)
    except (ValueError, OSError) as exc:
        print(f"roomcast capacity: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(render(result, origin))
    if args.show_costs:
        print()
        for name, value in sorted(dataclasses.asdict(costs).items()):
            print(f"{name} = {value:g}")
    return 0
