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

from functools import partial

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster

from roomcast.broker import scripts
from tests.support.delivery import Traffic, in_thread
from tests.support.refusals import join_answer, refusals, serves_again

pytestmark = pytest.mark.integration

ROOMS = ["acl-east", "acl-west"]
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
            await traffic.until(lambda: refusals(traffic) > before + 10, 10, "refusals")
            refused_join = await join_answer(cluster.url, ROOMS[0])
            assert refused_join["type"] == "error", refused_join
            assert refused_join["code"] == "unavailable", refused_join
            assert not await in_thread(partial(listed, admin, ROOMS[0], "late-joiner"))
        finally:
            await in_thread(partial(admin.execute_command, "ACL", "SETUSER", "default", "+@all"))

        await serves_again(traffic, cluster.url, admin, ROOMS, "PUBLISH revoked")
    finally:
        await traffic.close()
        admin.close()
