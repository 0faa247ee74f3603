"""A Sentinel failover onto a replica that lacks the primary's last acknowledged writes (async
replication: ``CLIENT PAUSE ALL`` on the replica holds the stream unprocessed while the primary
acknowledges more, then the primary is SIGKILLed), under WebSocket traffic, an event stream on
every node and through nginx, and HTTP posts to every node and through nginx; once alone, once
with nginx reloaded (an operator's config push) as the primary dies and again while Sentinel
elects the replica.

What the old primary acknowledged and the new one never had is gone: every member and stream
must be told which offsets (an ``epoch_changed`` loss, or a resume answered ``recovered:
false``), a post's 201 in the new epoch is at the offset history holds, and history never holds
another message at a position a member was sent (history rewritten under what was delivered).
Connected WebSocket members alone are checked by ``test_redis_sentinel_replica_lag.py``.
"""

from __future__ import annotations

from functools import partial

import pytest

from tests.support.delivery import in_thread
from tests.support.failovers import hold_replication, repl_offset, sentinel_nodes
from tests.support.posts import checked_after, on_every_path

pytestmark = pytest.mark.integration

ROOMS = ["lag-north", "lag-south"]


@pytest.mark.parametrize("nginx_reloaded", [False, True], ids=["alone", "nginx-reloaded"])
async def test_failover_onto_a_lagging_replica_is_told_on_every_path(nginx_reloaded: bool) -> None:
    async with sentinel_nodes() as (topology, cluster):
        traffic, poster = await on_every_path(cluster, ROOMS)
        try:
            await traffic.more_acks(5)
            primary, behind = await hold_replication(topology)
            accepted_before = sum(len(poster.accepted(room)) for room in ROOMS)
            await traffic.more_acks(10)
            ahead = await in_thread(partial(repl_offset, primary, "master_repl_offset"))
            assert behind < ahead
            acked_before_kill = traffic.acks()
            await in_thread(primary.kill)
            if nginx_reloaded:
                await in_thread(cluster.reload_nginx)
            await in_thread(partial(topology.wait_for_failover, primary.port))
            if nginx_reloaded:
                await in_thread(cluster.reload_nginx)
            await traffic.more_acks(10, timeout=40)
            what = (
                f"sentinel failover{', nginx reloaded x2' if nginx_reloaded else ''}, "
                f"{ahead - behind} bytes unreplicated, "
                f"{acked_before_kill} acked and {accepted_before}+ posts before the kill"
            )
            with topology.primary().client() as admin:
                await checked_after(traffic, poster, admin, what)
            for member in traffic.members:
                told = [e for e in member.losses if e["reason"] == "epoch_changed"]
                assert told, f"{member.name} never told of the failover: {member.losses}"
        finally:
            await poster.close()
            await traffic.close()
