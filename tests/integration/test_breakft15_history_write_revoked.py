"""The nodes' Redis user may publish but not write a room's history (``ACL SETUSER default
-lpush``: an operator trimming a user's rights command by command). Redis checks a script's
commands as it runs them and undoes none: the message script, refused its LPUSH after its INCR,
left the room's counter one ahead of its history, and every gap filled from history after that
took a neighbour's message for the one missing (members got duplicates).

The promise, checked by offset over every member: a refused send is neither kept nor
delivered, no member is told of a loss, and service comes back once the right does.
"""

from __future__ import annotations

from functools import partial

import pytest
from roomcast_dev.devcluster import LocalCluster

from tests.integration.test_faultteam15_redis_acl_publish_revoked import ROOMS, admin_of
from tests.support.delivery import Traffic, in_thread
from tests.support.refusals import refusals, serves_again

pytestmark = pytest.mark.integration

REFUSED = 50  # sends refused before the right comes back


async def test_history_write_revoked_keeps_offsets_and_history_in_step(
    quick_cluster: LocalCluster,
) -> None:
    cluster = quick_cluster
    admin = admin_of(cluster.redis_port)
    traffic = await Traffic.start(cluster.url, ROOMS)
    try:
        await traffic.more_acks(5)
        before = refusals(traffic)
        await in_thread(partial(admin.execute_command, "ACL", "SETUSER", "default", "-lpush"))
        try:
            await traffic.until(lambda: refusals(traffic) > before + REFUSED, 20, "refusals")
        finally:
            await in_thread(partial(admin.execute_command, "ACL", "SETUSER", "default", "+@all"))
        await serves_again(traffic, cluster.url, admin, ROOMS, "LPUSH revoked")
    finally:
        await traffic.close()
        admin.close()
