"""Integration fixtures: a REAL redis-server, REAL nginx and several node processes on loopback."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from roomcast_dev.devcluster import LocalCluster


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


# Benign defaults for shared clusters: generous rate limits so ordering tests can send bursts.
FAST_ENV = {
    "ROOMCAST_RATE_LIMIT_PER_SECOND": "5000",
    "ROOMCAST_RATE_LIMIT_BURST": "5000",
    "ROOMCAST_MESSAGE_RATE_PER_SECOND": "5000",
    "ROOMCAST_MESSAGE_RATE_BURST": "5000",
    "ROOMCAST_TYPING_RATE_PER_SECOND": "5000",
    "ROOMCAST_TYPING_RATE_BURST": "5000",
}


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """redis + 3 nodes + nginx, shared by the tests of one module (they must not break it)."""
    with LocalCluster(3, node_env=FAST_ENV) as running:
        yield running


@pytest.fixture
def fresh_cluster() -> Iterator[LocalCluster]:
    """A cluster of one's own, for tests that kill or restart parts of it."""
    with LocalCluster(3, node_env=FAST_ENV) as running:
        yield running
