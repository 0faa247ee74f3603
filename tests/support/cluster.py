"""Reading a running cluster from the outside: HTTP, Prometheus samples, readiness, waits."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from roomcast_dev.devcluster import SHARED_LIMITS_OFF, NodeProcess, timeout_factor

# Benign defaults for shared clusters: generous rate limits so ordering tests can send bursts.
FAST_ENV = {
    "ROOMCAST_RATE_LIMIT_PER_SECOND": "5000",
    "ROOMCAST_RATE_LIMIT_BURST": "5000",
    "ROOMCAST_MESSAGE_RATE_PER_SECOND": "5000",
    "ROOMCAST_MESSAGE_RATE_BURST": "5000",
    "ROOMCAST_TYPING_RATE_PER_SECOND": "5000",
    "ROOMCAST_TYPING_RATE_BURST": "5000",
    **SHARED_LIMITS_OFF,
}
# Fault tests: the nodes give up on a silent Redis after 1 s instead of 5.
QUICK_ENV = dict(FAST_ENV, ROOMCAST_REDIS_TIMEOUT="1")

__all__ = [
    "FAST_ENV",
    "QUICK_ENV",
    "SHARED_LIMITS_OFF",
    "http_get",
    "metric_value",
    "not_ready",
    "ready",
    "until",
]


def http_get(url: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """A sample from Prometheus text format (0.0 when absent)."""
    wanted = name
    if labels:
        wanted += "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == wanted:
            return float(value)
    return 0.0


def messages_published(node: NodeProcess) -> float:
    """Messages ``node`` handed to Redis (or to its publish hook), posts included."""
    text = http_get(f"{node.metrics_url}/metrics")[1]
    return metric_value(text, "roomcast_messages_published_total", {"type": "message"})


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a condition that has no event to await (an HTTP status of another process)."""
    deadline = time.monotonic() + timeout * timeout_factor()
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def ready(node: NodeProcess) -> bool:
    return http_get(f"{node.metrics_url}/readyz", timeout=2)[0] == 200


def not_ready(node: NodeProcess) -> bool:
    return not ready(node)
