"""The nodes' Redis user loses the right to publish under traffic (``ACL SETUSER default
-publish``, an operator tightening permissions, or a dedicated user created without ``&*`` while
Redis 7 defaults new users to no channels), then gets it back.

Redis checks a script's commands one by one as the script runs and undoes nothing: a script that
wrote its keys and then calls ``PUBLISH`` keeps its writes when the ``PUBLISH`` is refused. The
promise, checked by offset over every member: a sender told ``unavailable`` had its message
neither kept nor delivered (never found in history, never handed to a member when the gap behind
the next message is filled), a joiner told ``unavailable`` is not listed in the room's presence,
and service comes back by itself once the right is restored.
"""

from __future__ import annotations

import time
from functools import partial

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster

from roomcast.broker import scripts
from roomcast.runtime.log_sampling import BURST, LINES_PER_SECOND
from tests.support.cluster import http_get, metric_value
from tests.support.delivery import Traffic, in_thread
from tests.support.refusals import join_answer, refusals, serves_again

pytestmark = pytest.mark.integration

ROOMS = ["acl-east", "acl-west"]
REFUSED = 150  # sends refused before the right comes back: ~1 s of the traffic's 200 a second
ADMIN = "faults-admin"
ADMIN_PASSWORD = "faults-admin-password"


def admin_of(port: int) -> redis.Redis:
    """A user of the test's own, so that revoking the nodes' user leaves the test its commands."""
    default = redis.Redis(port=port)
    try:
        default.acl_setuser(
            ADMIN,
            enabled=True,
            passwords=[f"+{ADMIN_PASSWORD}"],
            keys=["*"],
            channels=["*"],
            commands=["+@all"],
        )
    finally:
        default.close()
    return redis.Redis(port=port, username=ADMIN, password=ADMIN_PASSWORD)


def refused_lines(cluster: LocalCluster) -> int:
    """Log lines, over every node, that tell of a command Redis refused."""
    return sum(
        "redis refused a command" in line for node in cluster.nodes for line in node.process.lines
    )


def refusals_counted(cluster: LocalCluster) -> float:
    """The refusals of publishing the nodes counted, over every node."""
    return sum(
        metric_value(
            http_get(f"{node.metrics_url}/metrics")[1],
            "roomcast_redis_refusals_total",
            {"kind": "NoPermissionError"},  # NOPERM, as redis-py names it
        )
        for node in cluster.nodes
    )


def listed(admin: redis.Redis, room: str, username: str) -> bool:
    """Whether the room's presence hash names ``username`` (its values are usernames)."""
    return username.encode() in admin.hvals(scripts.room_keys(room)[3])


async def test_publish_revoked_refusals_keep_nothing_and_service_returns(
    quick_cluster: LocalCluster,
) -> None:
    cluster = quick_cluster
    admin = admin_of(cluster.redis_port)
    traffic = await Traffic.start(cluster.url, ROOMS)
    try:
        await traffic.more_acks(5)
        before = refusals(traffic)
        await in_thread(partial(admin.execute_command, "ACL", "SETUSER", "default", "-publish"))
        try:
            started = time.monotonic()
            await traffic.until(lambda: refusals(traffic) > before + REFUSED, 20, "refusals")
            refused_for = time.monotonic() - started
            refused_join = await join_answer(cluster.url, ROOMS[0])
            assert refused_join["type"] == "error", refused_join
            assert refused_join["code"] == "unavailable", refused_join
            assert not await in_thread(partial(listed, admin, ROOMS[0], "late-joiner"))
        finally:
            await in_thread(partial(admin.execute_command, "ACL", "SETUSER", "default", "+@all"))

        await serves_again(traffic, cluster.url, admin, ROOMS, "PUBLISH revoked")
        # Each refusal is counted; the log keeps a few lines of them a second, not one each.
        lines = refused_lines(cluster)
        counted = await in_thread(partial(refusals_counted, cluster))
        print(f"{lines} log lines of {counted} refusals counted over {refused_for:.2f} s")
        assert lines <= len(cluster.nodes) * (BURST + LINES_PER_SECOND * refused_for + 1)
        assert counted >= refusals(traffic) - before
    finally:
        await traffic.close()
        admin.close()
