"""Waiting for a node to be ready (Redis connected): LocalCluster without nginx returns once the
nodes answer, not once they are ready, and a join before that is refused `unavailable`."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.adversarial.devcluster_shim import scaled
from tests.adversarial.httpraw import http


async def until_ready(node: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        try:
            if (await http(node.metrics_port, "GET", "/readyz", timeout=2)).status == 200:
                return
        except (OSError, TimeoutError):
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{node.node_id} did not become ready")
