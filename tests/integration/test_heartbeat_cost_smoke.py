"""bench/heartbeat_cost.py end to end at a tiny size: two real nodes (this tree and HEAD) holding
idle clients, measured in the same windows, and the bare round trip (whole, and the ping alone);
its figures are there and sane. No speed assertions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from roomcast_dev.devcluster import timeout_factor

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def test_heartbeat_cost_compares_two_builds_and_the_floor(tmp_path: Path) -> None:
    out = tmp_path / "heartbeat.json"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "heartbeat_cost.py"), "--connections", "40",
         "--interval", "0.5", "--rounds", "2", "--before", "HEAD", "--quiet",
         "--output", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=180 * timeout_factor(),
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["interval_s"] == 0.5
    figures = result["sizes"]["40"]
    assert set(figures) == {"before", "after"}
    for build in figures.values():
        assert len(build["us_per_connection_per_interval"]) == 2
        assert build["empty_node_cores"] >= 0
        assert build["median"] in build["us_per_connection_per_interval"]
    assert len(result["floor_us_per_round_trip"]) == 2
    assert all(us > 0 for us in result["floor_us_per_round_trip"])
    # The ping alone (a client that reads it and never answers), per round.
    assert len(result["floor_ping_only_us"]) == 2
    assert all(us > 0 for us in result["floor_ping_only_us"])
    assert "the ping alone (no pong)" in proc.stderr
    assert "40 connections, after:" in proc.stderr  # the progress log
