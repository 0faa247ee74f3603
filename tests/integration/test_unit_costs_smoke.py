"""bench/unit_costs.py end to end at a tiny size: real redis-server, nginx and three nodes; its
figures are sane (positive, the deliveries all arrived, the history held N messages) and the
capacity model's defaults can be derived from them. No speed assertions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from roomcast_dev.devcluster import timeout_factor

from roomcast.admin.capacity import UnitCosts

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "bench"))

import capacity_costs  # noqa: E402  (bench/capacity_costs.py)

pytestmark = pytest.mark.integration


def test_unit_costs_measures_and_derives(tmp_path: Path) -> None:
    out = tmp_path / "unit_costs.json"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "unit_costs.py"), "--clients", "30",
         "--setup-room-size", "10", "--rooms", "2", "--rate", "30", "--seconds", "1",
         "--rounds", "1", "--memory-rooms", "10", "--fan-out-messages", "200",
         "--output", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=180 * timeout_factor(),
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    units = json.loads(out.read_text())
    setups = units["setups_through_nginx"]
    assert setups["clients"] == 30
    assert all(setups["cpu_us_per_setup"][tier] > 0 for tier in ("nodes", "nginx", "redis"))
    assert [w["room_size"] for w in units["messages"]] == [1, 3, 60]
    for window in units["messages"]:
        assert window["messages"] > 0
        assert window["deliveries"] == window["messages"] * window["room_size"]
        assert window["cpu_us_per_message"]["nodes"] > 0
    memory = units["room_memory"]
    assert memory["messages_kept"] == memory["history_size"] == 100
    assert memory["used_memory_per_message"] > memory["text_bytes"]
    assert memory["presence_bytes_per_member"] > 0
    fan_out = units["redis_fan_out"]
    assert fan_out["messages_per_channel"] == 200
    assert all(v > 0 for v in fan_out["cpu_us_per_publish"].values())
    latest = json.loads((REPO_ROOT / "bench" / "results" / "latest.json").read_text())
    costs = capacity_costs.derive(latest, units)
    UnitCosts.from_mapping(costs)  # every field, finite and >= 0
