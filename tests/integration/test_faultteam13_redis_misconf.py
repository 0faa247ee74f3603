"""Redis refusing every write with ``MISCONF``: snapshots are configured
(``stop-writes-on-bgsave-error yes``, the default) and the last background save failed, here
because its forked child was SIGKILLed mid-save (what the kernel's OOM killer does to a fork
that doubles a busy Redis's memory). Reads, ``PING`` and ``PUBLISH`` still work, so the nodes'
links look healthy while every script's first write is refused.

The promise, checked by offset over every member: senders and joiners are told (``unavailable``,
never left waiting), nothing refused is kept or delivered, each acknowledged message reaches
every member once and in order, and service comes back by itself once a save succeeds.
"""

from __future__ import annotations

import os
import signal
from functools import partial

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster

from tests.support.cluster import until
from tests.support.delivery import Traffic, in_thread
from tests.support.refusals import join_answer, refusals, serves_again

pytestmark = pytest.mark.integration

ROOMS = ["misconf-east", "misconf-west"]


def save_children(redis_pid: int) -> list[int]:
    """The forked children of ``redis_pid`` (a background save's process)."""
    with open(f"/proc/{redis_pid}/task/{redis_pid}/children") as listing:
        return [int(pid) for pid in listing.read().split()]


def last_save_status(admin: redis.Redis) -> str:
    return str(admin.info("persistence")["rdb_last_bgsave_status"])


def fail_a_background_save(admin: redis.Redis) -> None:
    """A save that runs long (1 s a key), its child SIGKILLed: Redis records the save failed."""
    admin.config_set("save", "3600 1")
    admin.config_set("rdb-key-save-delay", "1000000")
    admin.bgsave()


async def test_writes_refused_misconf_senders_and_joiners_told_and_service_returns(
    quick_cluster: LocalCluster,
) -> None:
    cluster = quick_cluster
    assert cluster.redis is not None
    redis_pid = cluster.redis.pid
    admin = redis.Redis(port=cluster.redis_port)
    traffic = await Traffic.start(cluster.url, ROOMS)
    try:
        await traffic.more_acks(5)
        before = refusals(traffic)
        await in_thread(partial(fail_a_background_save, admin))
        await until(lambda: bool(save_children(redis_pid)), 10, "the save's child forked")
        for child in save_children(redis_pid):
            os.kill(child, signal.SIGKILL)
        await until(lambda: last_save_status(admin) == "err", 10, "the save failed")
        with pytest.raises(redis.ResponseError, match="MISCONF"):
            admin.set("misconf-probe", "1")

        await traffic.until(lambda: refusals(traffic) > before + 10, 10, "refusals")
        refused_join = await join_answer(cluster.url, ROOMS[0])
        assert refused_join["type"] == "error", refused_join
        assert refused_join["code"] == "unavailable", refused_join

        # A save that succeeds clears it; the nodes acknowledge and admit joins again.
        admin.config_set("rdb-key-save-delay", "0")
        admin.bgsave()
        await until(lambda: last_save_status(admin) == "ok", 10, "a save succeeded")
        await serves_again(traffic, cluster.url, admin, ROOMS, "MISCONF")
    finally:
        await traffic.close()
        admin.close()
