"""The ONE place this suite imports the project's dev-cluster helpers from.

They start redis-server, nodes and nginx the way ``make run`` does; when they move, only these
imports change. The suite attacks the cluster through its public surfaces alone.
"""

from __future__ import annotations

from roomcast_dev.devcluster import (
    REPO_ROOT,
    ClusterError,
    LocalCluster,
    ManagedProcess,
    find_binary,
    free_port,
    timeout_factor,
)
from roomcast_dev.example import ExampleStack
from roomcast_dev.hookserver import HookServer, verdict
from roomcast_dev.redis_topologies import RedisClusterTopology, SentinelTopology

__all__ = [
    "REPO_ROOT",
    "ClusterError",
    "ExampleStack",
    "HookServer",
    "LocalCluster",
    "ManagedProcess",
    "RedisClusterTopology",
    "SentinelTopology",
    "find_binary",
    "free_port",
    "scaled",
    "timeout_factor",
    "verdict",
]


def scaled(seconds: float) -> float:
    """Every wait of the suite, scaled by ROOMCAST_TEST_TIMEOUT_FACTOR."""
    return seconds * timeout_factor()
