"""Two faults close together, on the HTTP post path through nginx: a node's Redis link slows (the
replies to a ``POST /api/rooms/{room}/messages`` held by a relay: a congested or half-open link)
and that node dies (SIGKILL: a crash, the OOM killer) before it could answer. Redis ran the post's
script when it got it: the message is published to every other node's members.

nginx answers the poster itself, the node having closed without an answer (its 502). It must not
say 503 ``unavailable``, which the API defines as "nothing was published, and nothing will be":
a backend believing it posts the message again, a duplicate, or tells its user it failed. The
request reached a node, so its fate is unknown: 504 ``unconfirmed``. Before, nginx answered 503
``unavailable`` for the message the surviving node's member had already received.
"""

from __future__ import annotations

import asyncio
import json
import signal
from functools import partial

import pytest
from roomcast_dev.devcluster import LocalCluster, free_port

from tests.adversarial.redis_relay import RedisRelay
from tests.support.cluster import FAST_ENV, messages_published, ready, until
from tests.support.delivery import awaiting, in_thread, join_member
from tests.support.httpclient import request
from tests.support.wsclient import scaled

pytestmark = pytest.mark.integration

ROOM = "posted"
TEXT = "posted on a slow link"
ENV = dict(FAST_ENV, ROOMCAST_REDIS_TIMEOUT="10")  # the node waits for its reply meanwhile


async def test_a_post_whose_node_died_before_answering_is_not_answered_unavailable() -> None:
    cluster = LocalCluster(2, node_env=ENV)
    cluster.redis_port = free_port()
    relay = RedisRelay(cluster.redis_port)
    cluster.node_env["ROOMCAST_REDIS_URL"] = f"redis://127.0.0.1:{await relay.start()}"
    await in_thread(cluster.start)  # the nodes reach Redis through the relay meanwhile
    try:
        for node in cluster.nodes:
            await until(partial(ready, node), 20, f"{node.node_id} ready")
        watchers = [await join_member(n.url, ROOM, f"watcher-{n.node_id}") for n in cluster.nodes]
        relay.hold_after = TEXT.encode()
        post = asyncio.create_task(
            request(
                "POST",
                f"{cluster.http_url}/api/rooms/{ROOM}/messages",
                json_body={"text": TEXT, "username": "backend"},
                timeout=30,
            )
        )
        # Redis ran it and published it; the node that sent it still waits for its reply.
        await asyncio.wait_for(relay.asked.wait(), scaled(10))
        first = watchers[0]
        await awaiting(first, lambda: any(t == TEXT for _, _, t in first.messages))
        assert not post.done()
        # The node that took it (its count of posts handed to Redis went up) waits for the reply.
        counts = [await in_thread(partial(messages_published, n)) for n in cluster.nodes]
        victim = cluster.nodes[counts.index(max(counts))]
        assert sorted(counts) == [0, 1], counts
        victim.process.signal(signal.SIGKILL)
        await in_thread(partial(victim.process.popen.wait, 10))
        answer = await post
        body = json.loads(answer.body)
        delivered = {
            w.name: any(t == TEXT for _, _, t in w.messages)
            for w in watchers
            if w.node != victim.node_id
        }
        print(
            f"\npost's node killed before its answer: {answer.status} {body}; got it: {delivered}"
        )
        assert all(delivered.values()) and delivered
        assert (answer.status, body["code"]) == (504, "unconfirmed"), (answer.status, body)
        for watcher in watchers:
            await watcher.ws.close()
    finally:
        relay.release.set()
        await in_thread(cluster.stop)
        await relay.close()


async def test_a_post_no_node_took_is_still_answered_unavailable() -> None:
    """nginx's 503 keeps its meaning where it holds: no node reachable, nothing was sent."""
    with LocalCluster(1, node_env=ENV) as cluster:
        node = cluster.nodes[0]
        node.process.signal(signal.SIGKILL)
        await in_thread(partial(node.process.popen.wait, 10))
        answer = await request(
            "POST",
            f"{cluster.http_url}/api/rooms/{ROOM}/messages",
            json_body={"text": TEXT, "username": "backend"},
            timeout=30,
        )
        assert (answer.status, json.loads(answer.body)["code"]) == (503, "unavailable")
        history = await request("GET", f"{cluster.http_url}/api/rooms/{ROOM}/history")
        assert (history.status, json.loads(history.body)["code"]) == (503, "unavailable")
