"""Faults, tested rather than assumed: Redis restarted, a node drained by SIGTERM, a dead client."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import Iterator
from functools import partial

import pytest
from roomcast_dev.devcluster import LocalCluster

from tests.support.attacks import PING, PONG, RawConnection, frame, handshake
from tests.support.cluster import FAST_ENV, http_get, metric_value, not_ready, ready, until
from tests.support.wsclient import Client, clients_on_distinct_nodes, scaled

pytestmark = pytest.mark.integration


@pytest.fixture
def quick_cluster() -> Iterator[LocalCluster]:
    env = dict(FAST_ENV, ROOMCAST_REDIS_TIMEOUT="1", ROOMCAST_DRAIN_TIMEOUT="5")
    with LocalCluster(3, node_env=env) as running:
        yield running


async def test_redis_restart_nodes_resubscribe_and_outage_sends_get_unavailable(
    quick_cluster: LocalCluster,
) -> None:
    cluster = quick_cluster
    alice, bob = await clients_on_distinct_nodes(cluster.url, 2)
    room = "through-the-outage"
    try:
        await alice.join(room, "alice")
        await bob.join(room, "bob")
        await alice.send(type="message", text="before")
        assert (await bob.recv_type("message"))["text"] == "before"

        cluster.kill_redis()
        # Readiness follows Redis on every node: load balancers stop sending new clients.
        for node in cluster.nodes:
            await until(partial(not_ready, node), 10, f"{node.node_id} not ready")
            assert node.process.alive()
        metrics = http_get(f"{cluster.nodes[0].metrics_url}/metrics")[1]
        assert metric_value(metrics, "roomcast_redis_connected") == 0
        # A message that cannot be published is answered, never dropped silently.
        await alice.send(type="message", text="during")
        error = await alice.recv_type("error")
        assert error["code"] == "unavailable" and error["room"] == room
        # Joining a new room during the outage is refused the same way.
        await alice.send(type="join", room="new-during-outage", username="alice")
        assert (await alice.recv_type("error"))["code"] == "unavailable"

        cluster.start_redis()  # same port, empty: nothing survived but the nodes' own state
        for node in cluster.nodes:
            await until(partial(ready, node), 20, f"{node.node_id} ready again")
        # No client rejoined: the nodes resubscribed the rooms of their members themselves.
        await alice.send(type="message", text="after")
        assert (await bob.recv_type("message", text="after"))["username"] == "alice"
        await bob.send(type="message", text="reply")
        assert (await alice.recv_type("message", text="reply"))["username"] == "bob"
        metrics = http_get(f"{cluster.nodes[0].metrics_url}/metrics")[1]
        assert metric_value(metrics, "roomcast_redis_reconnects_total") >= 1
        assert metric_value(metrics, "roomcast_redis_connected") == 1
    finally:
        await alice.close()
        await bob.close()


async def test_sigterm_drains_with_1001_and_clients_reconnect_elsewhere(
    quick_cluster: LocalCluster,
) -> None:
    cluster = quick_cluster
    clients = [await Client.connect(cluster.url) for _ in range(12)]
    victim_id = clients[0].node
    victim = next(n for n in cluster.nodes if n.node_id == victim_id)
    on_victim = [c for c in clients if c.node == victim_id]
    others = [c for c in clients if c.node != victim_id]
    room = "drain-room"
    try:
        for index, client in enumerate(clients):
            await client.join(room, f"user{index}")
        started = time.monotonic()
        victim.process.signal(signal.SIGTERM)
        for client in on_victim:
            code, _ = await client.expect_close()
            assert code == 1001  # going away: reconnect
        # Its members' departures reach the other nodes.
        for _ in on_victim:
            await others[0].recv_type("user_left")
        exit_code = await asyncio.to_thread(victim.process.popen.wait, scaled(10))
        assert exit_code == 0
        assert time.monotonic() - started < scaled(6)  # within ROOMCAST_DRAIN_TIMEOUT (5 s)
        # The article's client reconnects to the same URL: nginx sends it to a live node.
        for index in range(len(on_victim)):
            again = await Client.connect(cluster.url)
            assert again.node != victim_id
            await again.join(room, f"back{index}")
            await again.send(type="message", text=f"I am back {index}")
            assert await others[0].recv_type("message", text=f"I am back {index}")
            await again.close()
    finally:
        for client in clients:
            await client.close()


async def test_dead_client_is_reaped_and_leaves_its_rooms() -> None:
    env = dict(FAST_ENV, ROOMCAST_PING_INTERVAL="0.3")
    with LocalCluster(2, nginx=False, node_env=env) as cluster:
        node = cluster.nodes[0]
        watcher = await Client.connect(cluster.nodes[1].url)
        try:
            await watcher.join("reap", "watcher")
            with socket.create_connection(("127.0.0.1", node.port), timeout=scaled(5)) as sock:
                # A client that completes the handshake, joins, then never answers a ping.
                sock.sendall(
                    b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n"
                )
                payload = json.dumps({"type": "join", "room": "reap", "username": "ghost"})
                sock.sendall(bytes((0x81, 0x80 | len(payload))) + b"\0\0\0\0" + payload.encode())
                assert (await watcher.recv_type("user_joined"))["username"] == "ghost"
                started = time.monotonic()
                left = await watcher.recv_type("user_left", timeout=5)
                assert left["username"] == "ghost"
                # Reaped within two ping intervals (plus scheduling slack).
                assert time.monotonic() - started < scaled(2.0)
            metrics = http_get(f"{node.metrics_url}/metrics")[1]
            assert metric_value(metrics, "roomcast_dead_connections_reaped_total") >= 1
            # The watcher answers pings (its library does) and is still connected.
            await watcher.send(type="message", text="still here")
            await watcher.recv_type("message", text="still here")
        finally:
            await watcher.close()


async def test_lone_pongs_keep_a_client_and_pongs_nobody_asked_for_are_still_a_flood() -> None:
    # The node takes the pong answering its ping, alone in its read, without parsing or charging
    # it. Over a real socket: a client that only ever answers pings outlives six intervals, and
    # the same client sending pongs unasked is charged for them and closed as a flood.
    env = dict(
        FAST_ENV,
        ROOMCAST_PING_INTERVAL="0.3",
        ROOMCAST_RATE_LIMIT_PER_SECOND="2",
        ROOMCAST_RATE_LIMIT_BURST="5",
    )
    with LocalCluster(1, nginx=False, node_env=env) as cluster:
        node = cluster.nodes[0]
        conn = await RawConnection.open(node.port, handshake())
        assert conn.status == 101, conn.head
        pings = 0
        while pings < 6:
            opcode, payload = await asyncio.wait_for(conn.next_frame(), scaled(5))
            assert opcode != 0x8, "closed while answering every ping"
            if opcode == PING:
                pings += 1
                conn.writer.write(frame(PONG, payload))
                await conn.writer.drain()
        metrics = http_get(f"{node.metrics_url}/metrics")[1]
        assert metric_value(metrics, "roomcast_dead_connections_reaped_total") == 0
        for _ in range(200):
            conn.writer.write(frame(PONG, b"rc"))
            await conn.writer.drain()
        assert await asyncio.wait_for(conn.close_code(), scaled(5)) == 1008
        conn.abort()


async def test_node_starts_while_redis_is_down_and_becomes_ready_later() -> None:
    with LocalCluster(0, nginx=False) as cluster:
        cluster.kill_redis()
        node = cluster.start_node({"ROOMCAST_REDIS_TIMEOUT": "1"})
        assert not ready(node)
        client = await Client.connect(node.url)  # accepts, but joins are refused for now
        try:
            await client.send(type="join", room="later", username="early")
            assert (await client.recv_type("error"))["code"] == "unavailable"
            cluster.start_redis()
            await until(lambda: ready(node), 20, "node ready")
            await client.join("later", "early")
        finally:
            await client.close()
