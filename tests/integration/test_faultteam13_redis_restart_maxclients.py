"""Redis restarted (SIGKILL, no persistence: a new epoch in every room) and, while the nodes
reconnect, at ``maxclients``: an operator lowered it to what is connected (or other clients
took every slot) and the nodes' subscriber links are closed, so they cannot listen again while
the command links that came back still run scripts. Members stay connected through all of it.

The promise, checked by offset over every member: messages sent while a node cannot listen are
refused (never acknowledged and lost), each member is told of the new epoch (a ``loss``
``epoch_changed``) before any message of it, and once slots are free the nodes listen again by
themselves and every acknowledged message reaches every member once and in order.
"""

from __future__ import annotations

import itertools
from functools import partial

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster

from tests.support.cluster import ready, until
from tests.support.delivery import Member, Traffic, in_thread

pytestmark = pytest.mark.integration

ROOMS = ["crowded-north", "crowded-south"]


def told_of_each_epoch(member: Member) -> bool:
    """Each epoch after the member's first was announced, before its first message, by an
    ``epoch_changed`` loss of the epoch before it (``new_epoch`` is null when the node did not
    know it yet)."""
    epochs = list(dict.fromkeys(epoch for epoch, _, _ in member.messages))
    own = set(member.acked.values())  # known from its ack first, which carries the epoch
    for before, after in itertools.pairwise(epochs):
        delivered = [
            member.seen_at[position]
            for position in ((e, o) for e, o, _ in member.messages if e == after)
            if position not in own
        ]
        first_seen = min(delivered, default=float("inf"))
        told = [
            at
            for loss, at in zip(member.losses, member.loss_times, strict=True)
            if loss.get("reason") == "epoch_changed"
            and loss.get("epoch") == before
            and loss.get("new_epoch") in (None, after)
        ]
        if not told or min(told) > first_seen:
            return False
    return True


async def test_nodes_reconnecting_after_a_restart_kept_out_by_maxclients(
    quick_cluster: LocalCluster,
) -> None:
    cluster = quick_cluster
    traffic = await Traffic.start(cluster.url, ROOMS)
    admin: redis.Redis | None = None
    try:
        await traffic.more_acks(5)
        cluster.kill_redis()
        await in_thread(cluster.start_redis)
        admin = redis.Redis(port=cluster.redis_port)
        # No slot left but the operator's: every link the nodes made back is closed, and each
        # new one is refused "max number of clients reached".
        await in_thread(partial(admin.config_set, "maxclients", "1"))
        for kind in ("normal", "pubsub"):
            await in_thread(partial(admin.client_kill_filter, _type=kind, skipme=True))
        refused = {s.name: len(s.refused) + len(s.unconfirmed) + 5 for s in traffic.senders}
        await traffic.until(
            lambda: all(
                len(s.refused) + len(s.unconfirmed) >= refused[s.name] for s in traffic.senders
            ),
            20,
            "refusals while no node can listen",
        )
        clients = int((await in_thread(partial(admin.info, "clients")))["connected_clients"])
        assert clients == 1, "a node's link got in at maxclients"
        acked_while_kept_out = traffic.acks()

        await in_thread(partial(admin.config_set, "maxclients", "10000"))
        for node in cluster.nodes:
            await until(partial(ready, node), 30, f"{node.node_id} ready again")
        await traffic.more_acks(10, timeout=30)
        await traffic.finish(timeout=30)
        print(f"\nrestart, then kept out by maxclients: {traffic.summary()}")
        traffic.check()
        assert traffic.acks() > acked_while_kept_out
        untold = [m.name for m in traffic.members if not told_of_each_epoch(m)]
        assert not untold, untold
    finally:
        await traffic.close()
        if admin is not None:
            await in_thread(partial(admin.config_set, "maxclients", "10000"))
            admin.close()
