"""bench/memory_breakdown.py end to end at a tiny size: a real redis-server and node, clients
from the benchmark's workers; it prints RSS, object types and allocation sites per connection,
and an open connection no longer holds websockets' protocol objects. No size assertions on
RSS (the machine's load moves it)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from roomcast_dev.devcluster import timeout_factor

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def test_memory_breakdown_accounts_per_connection() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "memory_breakdown.py"), "--levels", "20,60",
         "--workers", "1", "--top", "60"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300 * timeout_factor(),
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    out = proc.stdout
    last = out[out.index("=== 20 -> 60: 40 connections added ===") :]
    assert re.search(r"RSS growth: -?\d+ B = -?[\d.]+ KiB per connection", last)
    assert re.search(r"tracemalloc: Python heap \+\d+ B/conn", last)
    assert "Allocation sites" in last and "Largest call stacks" in last
    # One transport and one Connection per client; no websockets protocol state left over.
    assert re.search(r"B\s+1\.00  uvloop\.loop\.TCPTransport", last)
    assert re.search(r"B\s+1\.00  roomcast\.net\.transport\.Connection", last)
    assert "websockets.server.ServerProtocol" not in last
    assert "websockets.http11.Request" not in last
