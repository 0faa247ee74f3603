"""``python -m tests.chaos --seed 7 --duration 120``: a soak; prints progress and a summary,
writes tests/artifacts/chaos-<topology>-<seed>.json; exit 1 when the guarantee broke."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from tests.chaos import report
from tests.chaos.cluster import TOPOLOGIES
from tests.chaos.faults import FAULTS_BY_TOPOLOGY
from tests.chaos.runner import RunConfig, run

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of faults")
    parser.add_argument("--topology", choices=TOPOLOGIES, default="standalone")
    parser.add_argument(
        "--faults",
        default="",
        help="comma list of fault kinds (default: all the topology supports): "
        + "; ".join(f"{t}: {','.join(k)}" for t, k in FAULTS_BY_TOPOLOGY.items()),
    )
    parser.add_argument("--rooms", type=int, default=3)
    parser.add_argument("--readers", type=int, default=3, help="readers per room")
    parser.add_argument("--senders", type=int, default=2, help="senders per room")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between sends")
    parser.add_argument("--json", type=Path, default=None, help="where to write the JSON")
    parser.add_argument(
        "--histories",
        type=Path,
        default=None,
        help="also write every member's log here (JSON), to be judged again or read",
    )
    args = parser.parse_args(argv)
    config = RunConfig(
        seed=args.seed,
        duration=args.duration,
        topology=args.topology,
        kinds=tuple(k for k in args.faults.split(",") if k),
        rooms=args.rooms,
        readers_per_room=args.readers,
        senders_per_room=args.senders,
        send_interval=args.interval,
    )
    try:
        config.fault_kinds()
    except ValueError as exc:
        parser.error(str(exc))
    result = asyncio.run(run(config, progress=lambda line: print(line, flush=True)))
    doc = report.summary(result)
    path = args.json or ARTIFACTS / f"chaos-{config.topology}-{config.seed}.json"
    report.write(doc, path)
    if args.histories is not None:
        report.write({"members": [c.log.to_json() for c in result.clients]}, args.histories)
    print(report.text(doc))
    print(f"  JSON: {path}")
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
