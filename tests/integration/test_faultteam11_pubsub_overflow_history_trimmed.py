"""``client-output-buffer-limit pubsub`` reached under a burst that outruns the room's history:
Redis drops every node's subscriber link while a sender's burst of large messages goes on, and the
room keeps only its last 10 messages, so by the time a node's link is back some of what it missed
can no longer be read from history.

The promise, over WebSocket members and event streams (on every node and through nginx): each
acknowledged message reaches every member once and in order, or the member gets a ``loss`` that
names it; a loss never names a message the member was sent (it says exactly what was missed).
"""

from __future__ import annotations

from functools import partial

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster

from tests.support.cluster import QUICK_ENV, ready, until
from tests.support.delivery import Member, Traffic, in_thread
from tests.support.event_streams import StreamFollower, follow_stream, run_through

pytestmark = pytest.mark.integration

HISTORY = 10
BURST = 40
BIG = 20_000  # characters: each one overflows a 4 KiB subscriber buffer when published
# Each text is unique (its request id first): the check tells messages apart by their text.


def over_reported(member: Member) -> list[tuple[str, int]]:
    """Positions a loss event named although the member was sent the message."""
    return sorted(
        (epoch, offset)
        for epoch, offset in member.seen()
        for loss in member.losses
        if loss["epoch"] == epoch
        and loss["from_offset"] <= offset
        and (loss["to_offset"] is None or offset <= loss["to_offset"])
    )


async def test_overflow_past_the_history_is_told_exactly() -> None:
    env = dict(QUICK_ENV, ROOMCAST_HISTORY_SIZE=str(HISTORY))
    with LocalCluster(3, node_env=env) as cluster:
        for node in cluster.nodes:
            await until(partial(ready, node), 20, f"{node.node_id} ready")
        admin = redis.Redis(port=cluster.redis_port)
        ports = [node.port for node in cluster.nodes] + [cluster.nginx_port]
        followers: list[StreamFollower] = [
            await follow_stream(port, "north", f"north-sse-{port}") for port in ports
        ]
        traffic = await Traffic.start(cluster.url, ["north"])
        big = traffic.senders[0]

        async def overflow_burst() -> None:
            await in_thread(
                partial(admin.config_set, "client-output-buffer-limit", "pubsub 4096 0 0")
            )
            try:
                for index in range(BURST):
                    await big.send_message(f"big-{index}", f"big-{index} " + "x" * BIG)
                wanted = {f"big-{i}" for i in range(BURST)}
                await traffic.until(
                    lambda: wanted <= set(big.acked) | big.refused | big.unconfirmed,
                    30,
                    "the burst answered",
                )
            finally:
                await in_thread(
                    partial(admin.config_set, "client-output-buffer-limit", "pubsub 32mb 8mb 60")
                )

        try:
            await run_through(traffic, followers, overflow_burst, "pubsub overflow past history")
            members = traffic.members
            print(
                "losses per member:",
                {
                    m.name: [(x["reason"], x["from_offset"], x["to_offset"]) for x in m.losses]
                    for m in members
                },
            )
            # Some of the burst may be refused (``unavailable``) on a busy machine, not all.
            assert any(f"big-{i}" in big.acked for i in range(BURST))
            for member in members:
                assert not over_reported(member), (member.name, over_reported(member))
        finally:
            admin.close()
