"""docs/guarantees.md, "Presence": a node judges another dead only once its own heartbeats went
through for a whole ``ROOMCAST_PRESENCE_TTL``, "so a node that died during such an outage is
reaped within the TTL plus a third of it after Redis takes writes again". The other half of
tests/integration/test_faultteam5_presence_heartbeats.py (no live node reaped): a node
SIGKILLed while every heartbeat is refused (``maxmemory`` with ``noeviction``) must still have
its members announced gone, within that bound of memory being freed, and only its members.
"""

from __future__ import annotations

import signal
import time
from functools import partial

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster, ManagedProcess

from roomcast.broker.scripts import room_keys
from tests.support.cluster import QUICK_ENV, ready, until
from tests.support.delivery import in_thread
from tests.support.wsclient import Client, Event, scaled

pytestmark = pytest.mark.integration

ROOM = "lobby"
# Long enough that the bound (TTL + TTL/3 = 4 s) is far from what a node that waited one TTL
# more would take (~6.5 s), whatever the scheduling slack.
PRESENCE_TTL = 3.0
ENV = dict(QUICK_ENV, ROOMCAST_PRESENCE_TTL=str(PRESENCE_TTL))
FAILED_BEATS = 2  # on every node, so that the outage is under way everywhere
# Scheduling slack on this shared machine (scaled with ROOMCAST_TEST_TIMEOUT_FACTOR).
SLACK = 0.5


async def refuse_every_write(admin: redis.Redis) -> None:
    used = int((await in_thread(partial(admin.info, "memory")))["used_memory"])
    await in_thread(partial(admin.config_set, "maxmemory-policy", "noeviction"))
    await in_thread(partial(admin.config_set, "maxmemory", str(used // 2)))


async def take_writes_again(admin: redis.Redis) -> None:
    await in_thread(partial(admin.config_set, "maxmemory", "256mb"))
    await in_thread(partial(admin.config_set, "maxmemory-policy", "volatile-ttl"))


async def heartbeats_failed(node_process: ManagedProcess, count: int) -> None:
    failures = [0]

    def failed(line: str) -> bool:
        failures[0] += "presence heartbeat failed" in line
        return failures[0] >= count

    await in_thread(partial(node_process.wait_for_line, failed, 20))


async def test_a_node_killed_while_heartbeats_are_refused_is_reaped_once_redis_takes_writes() -> (
    None
):
    with LocalCluster(3, nginx=False, node_env=ENV) as cluster:
        admin = redis.Redis(port=cluster.redis_port)
        members = [await Client.connect(node.url) for node in cluster.nodes]
        watchers, victim = members[:2], cluster.nodes[2]
        try:
            for index, member in enumerate(members):
                await member.join(ROOM, f"member{index}")
            # Each watcher reads the joins after its own, so that it holds no event unread.
            for index, watcher in enumerate(watchers):
                for later in range(index + 1, len(members)):
                    await watcher.recv_type("user_joined", username=f"member{later}")
            await refuse_every_write(admin)
            for node in cluster.nodes:
                await heartbeats_failed(node.process, FAILED_BEATS)
            victim.process.signal(signal.SIGKILL)
            await in_thread(partial(victim.process.popen.wait, 10))
            await take_writes_again(admin)
            freed_at = time.monotonic()

            told: list[list[Event]] = []
            took: list[float] = []
            for watcher in watchers:
                events: list[Event] = []

                def gone(event: Event, into: list[Event] = events) -> bool:
                    into.append(event)
                    return event["type"] == "user_left" and event.get("username") == "member2"

                await watcher.recv_where(gone, timeout=PRESENCE_TTL * 4 + 10)
                took.append(time.monotonic() - freed_at)
                told.append([e for e in events if e["type"] in ("user_left", "user_joined")])
            print(
                f"\nnode SIGKILLed while heartbeats were refused (TTL {PRESENCE_TTL} s): its "
                f"member announced gone {', '.join(f'{t:.2f}' for t in took)} s after Redis "
                "took writes again"
            )
            bound = PRESENCE_TTL + PRESENCE_TTL / 3
            assert max(took) < bound + scaled(SLACK), (took, bound)
            # Only the dead node's member is announced gone, once, to each live member.
            for events in told:
                assert [(e["type"], e["username"]) for e in events] == [("user_left", "member2")]
            await watchers[0].send(type="presence", room=ROOM)
            presence = await watchers[0].recv_type("presence", room=ROOM)
            assert sorted(m["username"] for m in presence["members"]) == ["member0", "member1"]
        finally:
            for member in members:
                await member.close()
            admin.close()


async def presence_of(client: Client) -> list[str]:
    await client.send(type="presence", room=ROOM)
    return sorted(m["username"] for m in (await client.recv_type("presence", room=ROOM))["members"])


async def test_members_are_registered_again_after_redis_restarts_empty() -> None:
    """docs/guarantees.md, "Presence": "After a Redis restart, nodes register their members
    again": a Redis restarted without its data lists nobody until the nodes put their members
    back, which they must do by themselves (no member rejoins)."""
    with LocalCluster(2, nginx=False, node_env=ENV) as cluster:
        members = [await Client.connect(node.url) for node in cluster.nodes]
        try:
            for index, member in enumerate(members):
                await member.join(ROOM, f"member{index}")
            everyone = ["member0", "member1"]
            assert await presence_of(members[0]) == everyone
            await in_thread(cluster.kill_redis)
            await in_thread(cluster.start_redis)
            for node in cluster.nodes:
                await until(partial(ready, node), 20, f"{node.node_id} ready again")
            admin = redis.Redis(port=cluster.redis_port)
            try:
                # The nodes' own resync, not a join: no event to await but its effect in Redis.
                presence_key = room_keys(ROOM)[3]
                await until(lambda: admin.hlen(presence_key) == 2, 10, "members registered")
            finally:
                admin.close()
            for member in members:
                assert await presence_of(member) == everyone
        finally:
            for member in members:
                await member.close()
