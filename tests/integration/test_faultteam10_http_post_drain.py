"""A node drained (SIGTERM) while an HTTP post it took waits for Redis's reply (the reply held by
a relay: a slow or congested link). Redis ran the post's script when it got it: the message is
in the room.

The promise (docs/guarantees.md, "A node is drained"): the node answers what it took before it
goes, as it does on a WebSocket. A client talking to the node directly (or through a proxy that
does not turn a closed connection into 504, as the shipped nginx does) must hear, from the node:
the post's 201 when the reply comes within the drain's wait, 504 ``unconfirmed`` when it did not
(it may have been published), 503 ``unavailable`` for a request the node never handed to Redis.
Before, the node closed the post's connection without an answer: the client was told nothing
about a message every member of the room had.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from functools import partial
from urllib.parse import urlsplit

import h11
import pytest
from roomcast_dev.devcluster import LocalCluster, NodeProcess, free_port

from tests.adversarial.redis_relay import RedisRelay
from tests.support.cluster import FAST_ENV, http_get, messages_published, not_ready, ready, until
from tests.support.delivery import in_thread
from tests.support.httpclient import Response, request
from tests.support.wsclient import scaled

pytestmark = pytest.mark.integration

ROOM = "drained-post"
DRAIN_S = 4.0  # the drain waits for answers half of it
# The node waits for its reply well past the drain: only the drain decides what it is told.
ENV = dict(FAST_ENV, ROOMCAST_DRAIN_TIMEOUT=str(DRAIN_S), ROOMCAST_REDIS_TIMEOUT="30")


@pytest.fixture
async def relayed() -> AsyncIterator[tuple[LocalCluster, RedisRelay]]:
    """Two nodes reaching Redis through a relay; the first is drained, the second reads."""
    cluster = LocalCluster(2, nginx=False, node_env=ENV)
    cluster.redis_port = free_port()
    relay = RedisRelay(cluster.redis_port)
    cluster.node_env["ROOMCAST_REDIS_URL"] = f"redis://127.0.0.1:{await relay.start()}"
    await in_thread(cluster.start)
    try:
        for node in cluster.nodes:
            await until(partial(ready, node), 20, f"{node.node_id} ready")
        yield cluster, relay
    finally:
        relay.release.set()
        await in_thread(cluster.stop)
        await relay.close()


def _api(port: int, path: str) -> str:
    return f"http://127.0.0.1:{port}{path}"


async def _post(port: int, text: str) -> Response:
    """The node's answer; status 0 when it closed the connection without one."""
    try:
        return await request(
            "POST",
            _api(port, f"/api/rooms/{ROOM}/messages"),
            json_body={"text": text, "username": "backend"},
            timeout=30,
        )
    except (h11.RemoteProtocolError, ConnectionError):
        return Response(0, {}, b"")


async def _history_texts(port: int) -> list[tuple[int, str]]:
    answer = await request("GET", _api(port, f"/api/rooms/{ROOM}/history"))
    assert answer.status == 200, answer
    return [(m["offset"], m["text"]) for m in answer.json()["messages"]]


async def _held_post(cluster: LocalCluster, relay: RedisRelay, text: str) -> asyncio.Task[Response]:
    """A post on the first node whose script ran in Redis, its reply held by the relay."""
    node = cluster.nodes[0]
    before = await in_thread(partial(messages_published, node))
    relay.hold_after = text.encode()
    post = asyncio.create_task(_post(node.port, text))
    await asyncio.wait_for(relay.asked.wait(), scaled(10))
    await until(lambda: messages_published(node) > before, 10, "post handed to Redis")
    history = _api(cluster.nodes[1].port, f"/api/rooms/{ROOM}/history")

    def in_history() -> bool:  # Redis ran it: the room has it
        status, body = http_get(history)
        return status == 200 and any(m["text"] == text for m in json.loads(body)["messages"])

    await until(in_history, 5, "the held post in the room's history")
    assert not post.done()
    return post


async def _drained_holding_a_post(
    cluster: LocalCluster, relay: RedisRelay, text: str
) -> asyncio.Task[Response]:
    """The first node drains (not ready any more) while a post it took waits for its reply."""
    post = await _held_post(cluster, relay, text)
    cluster.nodes[0].process.signal(signal.SIGTERM)
    await until(partial(not_ready, cluster.nodes[0]), 10, "drain started")
    return post


async def _answer_before_exit(post: asyncio.Task[Response], node: NodeProcess) -> Response:
    answer = await post
    await in_thread(partial(node.process.popen.wait, scaled(15)))
    assert answer.status != 0, "the node closed the connection without an answer"
    return answer


async def test_a_post_still_waiting_at_the_drains_end_is_answered_unconfirmed_by_the_node(
    relayed: tuple[LocalCluster, RedisRelay],
) -> None:
    cluster, relay = relayed
    text = "held through the drain"
    post = await _drained_holding_a_post(cluster, relay, text)
    # The relay still holds the reply.
    answer = await _answer_before_exit(post, cluster.nodes[0])
    print(f"\npost held through a {DRAIN_S:.0f} s drain: {answer.status} {answer.body!r}")
    assert answer.headers.get("x-roomcast-node") == cluster.nodes[0].node_id
    assert (answer.status, answer.json()["code"]) == (504, "unconfirmed")
    assert any(t == text for _, t in await _history_texts(cluster.nodes[1].port))


async def test_a_post_whose_reply_comes_during_the_drain_is_answered_with_its_offset(
    relayed: tuple[LocalCluster, RedisRelay],
) -> None:
    cluster, relay = relayed
    post = await _drained_holding_a_post(cluster, relay, "answered during the drain")
    relay.release.set()
    answer = await _answer_before_exit(post, cluster.nodes[0])
    print(f"\npost answered during the drain: {answer.status} {answer.body!r}")
    assert answer.status == 201, answer
    offset = answer.json()["offset"]
    history = await _history_texts(cluster.nodes[1].port)
    assert (offset, "answered during the drain") in history


async def test_a_request_the_node_never_took_is_answered_unavailable(
    relayed: tuple[LocalCluster, RedisRelay],
) -> None:
    """A post whose head came before the drain and not yet its whole body: never handed to
    Redis. The node says so rather than closing in silence."""
    cluster, relay = relayed
    drained, other = cluster.nodes
    text = "body sent after the drain began"
    body = json.dumps({"text": text, "username": "backend"}).encode()
    url = urlsplit(_api(drained.port, f"/api/rooms/{ROOM}/messages"))
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(
            f"POST {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body[:5]
        )
        await writer.drain()
        # A post in flight keeps the drain waiting, so this connection is seen mid-request.
        held = await _drained_holding_a_post(cluster, relay, "keeps the drain busy")
        answer = await asyncio.wait_for(reader.read(), scaled(15))
    finally:
        writer.close()
    print(f"\nrequest half-sent at the drain: {answer[:200]!r}")
    head = answer.split(b"\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 503"), answer
    assert b'"unavailable"' in answer
    await held
    assert all(t != text for _, t in await _history_texts(other.port))
