"""Integration fixtures: a REAL redis-server, REAL nginx and several node processes on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from roomcast_dev.devcluster import LocalCluster

from tests.support.cluster import FAST_ENV, QUICK_ENV


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A redis-server alone (no node), shared by the tests of one module."""
    with LocalCluster(0, nginx=False) as running:
        assert running.redis_url is not None
        yield running.redis_url


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


@pytest.fixture
def quick_cluster() -> Iterator[LocalCluster]:
    """A cluster of one's own whose nodes give up on a silent Redis after 1 s (fault tests)."""
    with LocalCluster(3, node_env=QUICK_ENV) as running:
        yield running
