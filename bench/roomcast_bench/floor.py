"""The write floor in the same run as the fan-out: CPU per delivery of bare socket writes.

``bench/write_floor.py`` (its own process: it forks a reader) writes one pre-built frame per
write to as many loopback sockets as one node holds of a fan-out room, at the fan-out's message
rate. Node CPU per delivery over that floor is what roomcast adds above the system calls a
delivery needs (issue 18's per-delivery target: at most 1.15x the floor).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parents[1] / "write_floor.py"
NODES = 3


def measure(members: int, deliveries_per_s: float, seconds: float) -> dict[str, Any]:
    """{"cpu_us_per_delivery": µs, ...} for one frame per write, or {"error": why}."""
    recipients = max(1, round(members / NODES))
    messages_per_s = deliveries_per_s / members
    command = [
        sys.executable, str(SCRIPT), "--json", "--batches", "1", "--recipients",
        str(recipients), "--rate", f"{messages_per_s:g}", "--seconds", f"{seconds:g}",
    ]  # fmt: skip
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds * 4 + 60, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": "write_floor.py did not finish in time"}
    if proc.returncode != 0 or not proc.stdout.strip():
        return {"error": f"write_floor.py failed: {proc.stderr.strip()[-300:]}"}
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "recipients": recipients,
        "messages_per_s": messages_per_s,
        "seconds": seconds,
        "cpu_us_per_delivery": measured["cpu_us_per_delivery"]["1"],
    }
