"""Redis's own ``FAILOVER`` command (no Sentinel): the primary the nodes are configured with
pauses writes, lets its replica catch up, and becomes that replica's replica; the operator fails
back with ``FAILOVER`` on the other one. Meanwhile the nodes still reach only the demoted one:
every message must be refused (``READONLY``: it never ran), never acknowledged and lost, and
once the primary is back the nodes acknowledge again, each member told that the room went on
in a new epoch (the primary came back under a new replication id: whatever it was given while
it was a replica cannot be vouched for). Members stay connected on 2 nodes throughout.
"""

from __future__ import annotations

from functools import partial

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster

from tests.support.cluster import QUICK_ENV, ready, until
from tests.support.delivery import Traffic, in_thread

pytestmark = pytest.mark.integration


def role(client: redis.Redis) -> str:
    return str(client.info("replication")["role"])


def in_sync(client: redis.Redis) -> bool:
    return client.info("replication").get("master_link_status") == "up"


def refusals(traffic: Traffic) -> int:
    return sum(len(sender.refused) + len(sender.unconfirmed) for sender in traffic.senders)


async def test_failover_command_away_and_back_under_traffic() -> None:
    with (
        LocalCluster(0, nginx=False) as first,
        LocalCluster(0, nginx=False) as second,
    ):
        primary, replica = redis.Redis(port=first.redis_port), redis.Redis(port=second.redis_port)
        env = dict(QUICK_ENV, ROOMCAST_REDIS_URL=f"redis://127.0.0.1:{first.redis_port}/0")
        try:
            await in_thread(partial(replica.replicaof, "127.0.0.1", first.redis_port))
            with LocalCluster(2, redis=False, nginx=False, node_env=env) as cluster:
                for node in cluster.nodes:
                    await until(partial(ready, node), 20, f"{node.node_id} ready")
                urls = [node.url for node in cluster.nodes]
                traffic = await Traffic.start(lambda i: urls[i % len(urls)], ["north", "south"])
                try:
                    await traffic.more_acks(5)
                    await until(partial(in_sync, replica), 10, "the replica in sync")
                    before = refusals(traffic)
                    await in_thread(partial(primary.execute_command, "FAILOVER"))
                    await until(lambda: role(primary) == "slave", 10, "the primary demoted")
                    await traffic.until(lambda: refusals(traffic) > before + 20, 10, "refusals")
                    await in_thread(partial(replica.execute_command, "FAILOVER"))
                    await until(lambda: role(primary) == "master", 10, "the primary back")
                    await traffic.more_acks(10, timeout=30)
                    await traffic.finish(timeout=30)
                    print(f"\nFAILOVER away and back: {traffic.summary()}")
                    traffic.check()
                    for member in traffic.members:
                        reasons = [loss["reason"] for loss in member.losses]
                        assert reasons.count("epoch_changed") == 1, member.losses
                finally:
                    await traffic.close()
        finally:
            primary.close()
            replica.close()
