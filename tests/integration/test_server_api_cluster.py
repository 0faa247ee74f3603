"""The server API on Redis Cluster (3 primaries, REAL redis-server processes, 3 nodes, nginx):
the control channel is a sharded channel every node subscribes on its shard, deletion and
clearing are scripts in the room's slot, and the rooms index has a slot of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from roomcast_dev.devcluster import LocalCluster
from roomcast_dev.redis_topologies import RedisClusterTopology

from tests.support import serverapi
from tests.support.serverapi import API_ENV, all_ready

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with (
        RedisClusterTopology(primaries=3, replicas=0) as topology,
        LocalCluster(3, redis=False, node_env=dict(API_ENV, **topology.node_env())) as running,
    ):
        yield all_ready(running)


async def test_disconnect_reaches_every_node_over_the_sharded_control_channel(
    cluster: LocalCluster,
) -> None:
    await serverapi.check_disconnect(cluster)


async def test_remove_and_ban_on_redis_cluster(cluster: LocalCluster) -> None:
    await serverapi.check_remove(cluster)
    await serverapi.check_ban(cluster)


async def test_delete_and_clear_on_redis_cluster(cluster: LocalCluster) -> None:
    await serverapi.check_delete(cluster)
    await serverapi.check_clear(cluster)


async def test_broadcast_rooms_and_cluster_on_redis_cluster(cluster: LocalCluster) -> None:
    await serverapi.check_broadcast(cluster)
    await serverapi.check_rooms_and_cluster(cluster)
