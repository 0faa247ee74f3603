"""Another client of the same Redis runs a long Lua script: past ``busy-reply-threshold`` Redis
answers every other command ``BUSY`` until the script ends by itself or is ended by
``SCRIPT KILL``. Here the script spins past the presence TTL and its third, so no node's
heartbeat is taken for seconds, and past the nodes' subscriber watchdog, so their subscriber
links connect again while it runs; then a second one is killed.

The promise, checked by offset over every member: every send answered (a ``BUSY`` refusal is
``unavailable``, and nothing refused is kept or delivered), no ``loss``, no live node taken for
dead once the script ends (its members never told that the others left), and service back by
itself after each script. Before, a subscriber link that connected again mid-script had its
SUBSCRIBEs refused ``BUSY`` and never sent them again: its rooms stayed unheard on that node
and every message to them was refused, long after the script ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from functools import partial

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster

from tests.integration.test_faultteam5_presence_heartbeats import heartbeats_after
from tests.support.cluster import QUICK_ENV, until
from tests.support.delivery import Traffic, in_thread
from tests.support.presence_told import presence_until
from tests.support.refusals import refusals, serves_again
from tests.support.wsclient import Client, Event, scaled

pytestmark = pytest.mark.integration

ROOMS = ["busy-east", "busy-west"]
WATCHED = "busy-watched"
PRESENCE_TTL = 1.5
ENV = dict(QUICK_ENV, ROOMCAST_PRESENCE_TTL=str(PRESENCE_TTL))
# Past the TTL and its third (no heartbeat taken meanwhile), and past the nodes' subscriber
# watchdog (1.5 x ROOMCAST_REDIS_TIMEOUT without a pong): their links connect again mid-script.
BUSY_SECONDS = 5.0
MARK_WITHIN = 5.0  # the reconnect pace and a heartbeat round, with room to spare
KILLED_AFTER_SECONDS = 60.0  # the second script's length: SCRIPT KILL ends it long before

# Spins, writing nothing (so that SCRIPT KILL may end it), until ARGV[1] µs have passed.
SPIN = """
local start = redis.call('TIME')
local stop = tonumber(start[1]) * 1000000 + tonumber(start[2]) + tonumber(ARGV[1])
while true do
  local now = redis.call('TIME')
  if tonumber(now[1]) * 1000000 + tonumber(now[2]) > stop then
    return 1
  end
end
"""


def spin(port: int, seconds: float) -> None:
    """Run the spinning script from a client of its own; a SCRIPT KILL ends it with an error."""
    outsider = redis.Redis(port=port)
    try:
        with contextlib.suppress(redis.ResponseError):
            outsider.eval(SPIN, 0, int(seconds * 1_000_000))
    finally:
        outsider.close()


def answers(request: str, event: Event) -> bool:
    return event.get("id") == request


async def mark_acknowledged(sender: Client, within: float) -> int:
    """Send the mark until it is acknowledged (each refusal is a true answer while a node
    subscribes again): how many attempts were refused first, failing past ``within`` s."""
    deadline = time.monotonic() + scaled(within)
    for attempt in itertools.count():
        request = f"mark-{attempt}"
        await sender.send(type="message", room=WATCHED, text="still here", id=request)
        answer = await sender.recv_where(partial(answers, request))
        if answer["type"] == "ack":
            return attempt
        assert time.monotonic() < deadline, f"still refused after {within} s: {answer}"
        await asyncio.sleep(0.05)
    raise AssertionError("unreachable")


async def presence_told(watchers: list[Client]) -> tuple[int, list[list[Event]]]:
    """The presence events each watcher got up to a message sent after the fault, and how
    many times that message was refused first."""
    refused = await mark_acknowledged(watchers[0], MARK_WITHIN)
    return refused, await presence_until(watchers, "still here")


async def test_another_clients_long_script_answers_everything_reaps_no_live_node() -> None:
    with LocalCluster(3, node_env=ENV) as cluster:
        admin = redis.Redis(port=cluster.redis_port)
        await in_thread(partial(admin.config_set, "busy-reply-threshold", "100"))
        watchers = [await Client.connect(node.url) for node in cluster.nodes]
        traffic = await Traffic.start(cluster.url, ROOMS)
        try:
            for index, watcher in enumerate(watchers):
                await watcher.join(WATCHED, f"watcher{index}")
            await traffic.more_acks(5)

            before = refusals(traffic)
            spinning = asyncio.create_task(
                in_thread(partial(spin, cluster.redis_port, BUSY_SECONDS))
            )
            await traffic.until(lambda: refusals(traffic) > before + 10, 10, "BUSY refusals")
            await spinning
            ended_ms = int((await in_thread(admin.time))[0]) * 1000
            await until(partial(heartbeats_after, admin, ended_ms), 20, "heartbeats")
            mark_refused, told = await presence_told(watchers)
            busy_refused = refusals(traffic) - before
            left = [[e["username"] for e in t if e["type"] == "user_left"] for t in told]
            print(
                f"\nscript ran {BUSY_SECONDS} s (TTL {PRESENCE_TTL} s): {busy_refused} sends "
                f"refused, presence events {json.dumps([[e['type'] for e in t] for t in told])}"
                f", a message after it refused {mark_refused} times first"
            )
            assert left == [[], [], []], told
            await traffic.more_acks(10)

            before = refusals(traffic)
            long_spin = partial(spin, cluster.redis_port, KILLED_AFTER_SECONDS)
            spinning = asyncio.create_task(in_thread(long_spin))
            await traffic.until(lambda: refusals(traffic) > before + 10, 10, "BUSY refusals")
            await in_thread(partial(admin.script_kill))
            async with asyncio.timeout(scaled(10)):
                await spinning

            await serves_again(traffic, cluster.url, admin, ROOMS, "BUSY")
        finally:
            await traffic.close()
            for watcher in watchers:
                await watcher.close()
            admin.close()
