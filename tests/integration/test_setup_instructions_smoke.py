"""bench/setup_instructions.py end to end at a tiny size, on the in-memory broker and on a REAL
redis-server (``--redis``): every part runs to its end and reports a positive CPU figure. No
speed assertions."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from roomcast_dev.devcluster import timeout_factor

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("options", "parts"),
    [
        ([], ["idle", "handshake", "join", "delivery", "close"]),
        (["--redis", "join", "delivery", "close"], ["join", "delivery", "close"]),
        # A room of another size; only its last member's stand-in is watched (Redis).
        (["--redis", "--room-size", "3", "delivery"], ["delivery"]),
    ],
)
def test_setup_instructions_runs_every_part(options: list[str], parts: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "setup_instructions.py"), "--count", "20",
         *options],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120 * timeout_factor(),
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = re.findall(r"^(\w+): ([0-9.]+) µs CPU each \(20\)$", proc.stdout, re.MULTILINE)
    assert [name for name, _ in found] == parts, proc.stdout
    assert all(float(micros) > 0 for _, micros in found)
