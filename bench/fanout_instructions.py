"""Instructions of the node's fan-out per message and per recipient, counted by callgrind.

``bench/setup_instructions.py``'s delivery part (one message from a member, published, fanned
out to a room of N members on one node, each written to a stand-in transport) runs under
``valgrind --tool=callgrind`` at two room sizes; with the idle window's count subtracted, a
message to N members costs ``per_message + N * per_recipient`` instructions, and the two sizes
give both terms. Instructions do not move with the load of a shared machine, so two versions of
the node code compare on any machine:

    .venv/bin/python bench/fanout_instructions.py                 # memory and Redis brokers
    .venv/bin/python bench/fanout_instructions.py --node ../main/node   # another checkout's node

Each run takes about a minute per broker (valgrind slows Python ~50x). ``--redis`` starts a
redis-server of its own on loopback (setup_instructions.py does).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "setup_instructions.py"
TOTALS = re.compile(rb"^totals: (\d+)$", re.MULTILINE)


def counted(room_size: int, count: int, broker: str, node: Path, scratch: Path) -> tuple[int, int]:
    """Instructions of ``count`` idle windows and of ``count`` messages to ``room_size``."""
    out = scratch / f"{broker}-{room_size}"
    argv = [
        "valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=math_fsum",
        "--dump-after=math_prod", f"--callgrind-out-file={out}.%p",
        sys.executable, str(SCRIPT), "--count", str(count), "--room-size", str(room_size),
        *(["--redis"] if broker == "redis" else []), "idle", "delivery",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(node), str(ROOT)])}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
    # One file per part, written when the part ends: .1 the idle windows, .2 the deliveries.
    files = sorted(scratch.glob(f"{out.name}.*.*"), key=lambda p: int(p.suffix[1:]))
    totals = [int(m.group(1)) for f in files if (m := TOTALS.search(f.read_bytes()))]
    if len(totals) != 2:
        raise RuntimeError(f"expected 2 callgrind parts in {scratch}, found {totals}")
    return totals[0], totals[1]


def split(
    small: int, large: int, count: int, broker: str, node: Path, scratch: Path
) -> dict[str, float]:
    """Per message and per recipient, from the deliveries at two room sizes."""
    per_size = {}
    for size in (small, large):
        idle, delivery = counted(size, count, broker, node, scratch)
        per_size[size] = (delivery - idle) / count
    per_recipient = (per_size[large] - per_size[small]) / (large - small)
    return {
        "per_recipient": per_recipient,
        "per_message": per_size[small] - small * per_recipient,
        **{f"message_to_{size}": value for size, value in per_size.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100, help="messages per room size")
    parser.add_argument("--sizes", default="5,65", help="two room sizes (default 5,65)")
    parser.add_argument("--brokers", default="memory,redis", help="memory, redis or both")
    parser.add_argument(
        "--node", type=Path, default=ROOT / "node",
        help="the node code to count (a checkout's node/ folder; default this one's)",
    )  # fmt: skip
    args = parser.parse_args()
    small, large = sorted(int(s) for s in args.sizes.split(","))
    if small == large:
        parser.error("--sizes needs two different room sizes")
    print(
        f"node code: {args.node.resolve()}; {args.count} messages per room size;"
        " instructions (callgrind), the idle window subtracted"
    )
    print(f"| broker | per recipient | per message | message to {small} | message to {large} |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for broker in args.brokers.split(","):
        with tempfile.TemporaryDirectory(prefix="fanout-instructions-") as scratch:
            figures = split(small, large, args.count, broker, args.node, Path(scratch))
        print(
            f"| {broker} | {figures['per_recipient']:,.0f} | {figures['per_message']:,.0f}"
            f" | {figures[f'message_to_{small}']:,.0f} | {figures[f'message_to_{large}']:,.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
