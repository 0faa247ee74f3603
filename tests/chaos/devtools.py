"""The ONE place the chaos suite imports the project's process helpers from.

They start redis-server, nodes and nginx the way ``make run`` does. When they move (as they did
from ``roomcast.*`` to ``roomcast_dev.*``, issue 13), only these imports change.
"""

from __future__ import annotations

from roomcast_dev.devcluster import (
    ClusterError,
    LocalCluster,
    ManagedProcess,
    NodeProcess,
    find_binary,
    free_port,
    timeout_factor,
)
from roomcast_dev.redis_topologies import (
    RedisClusterTopology,
    RedisServer,
    SentinelTopology,
    wait_until,
)

__all__ = [
    "ClusterError",
    "LocalCluster",
    "ManagedProcess",
    "NodeProcess",
    "RedisClusterTopology",
    "RedisServer",
    "SentinelTopology",
    "find_binary",
    "free_port",
    "timeout_factor",
    "wait_until",
]
