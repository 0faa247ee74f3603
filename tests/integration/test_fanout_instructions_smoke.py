"""bench/fanout_instructions.py end to end at a tiny size under valgrind (make perf-deps
installs it), on the in-memory broker: a positive count per recipient and per message, and a
message to the bigger room costs more. No speed assertions."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from roomcast_dev.devcluster import timeout_factor

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


@pytest.mark.timeout(900)
def test_fanout_instructions_splits_a_delivery_per_message_and_per_recipient() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "fanout_instructions.py"), "--count", "20",
         "--sizes", "2,22", "--brokers", "memory"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600 * timeout_factor(),
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = re.search(r"^\| memory \| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \|$", proc.stdout,
                    re.MULTILINE)  # fmt: skip
    assert row, proc.stdout
    per_recipient, per_message, to_small, to_large = (int(g.replace(",", "")) for g in row.groups())
    assert per_recipient > 0 and per_message > 0, proc.stdout
    assert to_large > to_small, proc.stdout
