"""Cross-node behaviour through REAL nginx, REAL redis-server and 3 node processes."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from roomcast_dev.devcluster import LocalCluster

from tests.support.cluster import http_get, metric_value
from tests.support.wsclient import Client, clients_on_distinct_nodes, scaled

pytestmark = pytest.mark.integration


def new_room() -> str:
    return "room-" + uuid.uuid4().hex[:12]


async def test_article_protocol_across_two_nodes(cluster: LocalCluster) -> None:
    """The article's frames, unchanged, between a user on one node and a user on another (plus
    the author's user_id, docs/protocol.md "User ids")."""
    alice, bob = await clients_on_distinct_nodes(cluster.url, 2)
    assert alice.node != bob.node  # the welcome frames prove two different nodes
    room = new_room()
    try:
        await alice.join(room, "alice")
        # Exactly the article's join frame: no extra fields.
        await bob.send_raw(json.dumps({"type": "join", "room": room, "username": "bob"}))
        joined = await alice.recv_type("user_joined")
        bob_id = bob.welcome["user_id"]
        assert joined == {"type": "user_joined", "room": room, "username": "bob", "user_id": bob_id}
        await bob.recv_type("joined", room=room)

        await bob.send_raw(json.dumps({"type": "typing"}))
        typing = await alice.recv_type("typing")
        assert typing == {"type": "typing", "room": room, "username": "bob", "user_id": bob_id}

        await bob.send_raw(json.dumps({"type": "message", "text": 'hi 👋 "x"', "timestamp": 1}))
        for member in (alice, bob):
            message = await member.recv_type("message")
            assert message["username"] == "bob"
            assert message["user_id"] == bob_id
            assert message["text"] == 'hi 👋 "x"'
            assert message["room"] == room
            assert message["timestamp"] > 1_000_000_000_000  # server time in ms, not the client's
        # The sender never gets its own typing or user_joined event.
        assert all(e["type"] not in ("typing", "user_joined") for e in bob._buffer)

        await bob.send(type="leave")
        assert await bob.recv_type("left") == {"type": "left", "room": room}
        assert await alice.recv_type("user_left") == {
            "type": "user_left", "room": room, "username": "bob", "user_id": bob_id,
        }  # fmt: skip
        await bob.join(room, "bob")
        await alice.recv_type("user_joined", username="bob")
        await bob.close()  # a closed connection leaves its rooms too
        assert (await alice.recv_type("user_left"))["username"] == "bob"
    finally:
        await alice.close()
        await bob.close()


async def test_several_rooms_per_connection(cluster: LocalCluster) -> None:
    alice, bob = await clients_on_distinct_nodes(cluster.url, 2)
    first, second = new_room(), new_room()
    try:
        for room in (first, second):
            await alice.join(room, "alice")
            await bob.join(room, "bob")
        # Without "room": the room joined last (the article's behaviour); with it: that room.
        await alice.send(type="message", text="to second")
        await alice.send(type="message", text="to first", room=first)
        got = [await bob.recv_type("message"), await bob.recv_type("message")]
        assert {(m["room"], m["text"]) for m in got} == {
            (second, "to second"), (first, "to first"),
        }  # fmt: skip
        await alice.send(type="message", text="nope", room=new_room())
        error = await alice.recv_type("error")
        assert error["code"] == "not_joined"
    finally:
        await alice.close()
        await bob.close()


async def test_message_right_after_first_join_reaches_every_node(cluster: LocalCluster) -> None:
    """No SUBSCRIBE/PUBLISH race: join and speak back to back, in fresh rooms, many times."""
    members = [await Client.connect(node.url) for node in cluster.nodes]
    probes = 150
    try:
        for probe in range(probes):
            room = new_room()
            # Listeners on the other nodes join first (their own first join of the room)...
            for index, member in enumerate(members[1:], start=1):
                await member.join(room, f"listener{index}")
            # ...then the speaker's join is the first on its node and the message follows at
            # once, without waiting for the joined acknowledgement.
            speaker = members[0]
            await speaker.send(type="join", room=room, username="speaker")
            await speaker.send(type="message", text=f"probe {probe}")
            for member in members:
                message = await member.recv_type("message", timeout=5, room=room)
                assert message["text"] == f"probe {probe}"
            for member in members:
                await member.send(type="leave", room=room)
                await member.recv_type("left", room=room)
    finally:
        for member in members:
            await member.close()


async def test_every_member_sees_the_same_order(cluster: LocalCluster) -> None:
    room = new_room()
    members = [await Client.connect(cluster.nodes[i % 3].url) for i in range(9)]
    per_sender = 120
    senders = members[:4]
    try:
        for index, member in enumerate(members):
            await member.join(room, f"user{index}")

        async def speak(sender: Client, name: str) -> None:
            for seq in range(per_sender):
                await sender.send(type="message", text=f"{name}:{seq}")

        await asyncio.gather(*(speak(s, f"s{i}") for i, s in enumerate(senders)))
        total = per_sender * len(senders)
        sequences = []
        for member in members:
            seen = [(await member.recv_type("message", timeout=15))["text"] for _ in range(total)]
            sequences.append(seen)
        reference = sequences[0]
        assert len(set(reference)) == total
        for seen in sequences[1:]:
            assert seen == reference  # identical order at every member, on every node
        for name in (f"s{i}" for i in range(len(senders))):
            mine = [int(t.split(":")[1]) for t in reference if t.startswith(name + ":")]
            assert mine == list(range(per_sender))  # and each sender's own order kept
    finally:
        for member in members:
            await member.close()


async def test_metrics_and_health_endpoints(cluster: LocalCluster) -> None:
    node = cluster.nodes[0]
    _, before = http_get(f"{node.metrics_url}/metrics")
    alice = await Client.connect(node.url)
    bob = await Client.connect(cluster.nodes[1].url)
    room = new_room()
    try:
        await alice.join(room, "alice")
        await bob.join(room, "bob")
        for i in range(10):
            await bob.send(type="message", text=f"m{i}")
        for _ in range(10):
            await alice.recv_type("message")
        await alice.send_raw("{not json")
        assert (await alice.recv_type("error"))["code"] == "invalid_json"
        status, after = http_get(f"{node.metrics_url}/metrics")
        assert status == 200

        def delta(name: str, labels: dict[str, str] | None = None) -> float:
            return metric_value(after, name, labels) - metric_value(before, name, labels)

        assert delta("roomcast_deliveries_total") >= 10
        assert delta("roomcast_fanout_latency_seconds_count") >= 10
        assert delta("roomcast_frames_received_total", {"type": "join"}) == 1
        assert delta("roomcast_frames_rejected_total", {"code": "invalid_json"}) == 1
        assert metric_value(after, "roomcast_redis_connected") == 1
        assert metric_value(after, "roomcast_connections_open") >= 1
        assert metric_value(after, "roomcast_rooms_local") >= 1
        # The histogram starts at 100 µs and ends at 5 s.
        assert 'roomcast_fanout_latency_seconds_bucket{le="0.0001"}' in after
        assert 'roomcast_fanout_latency_seconds_bucket{le="5.0"}' in after
        assert http_get(f"{node.metrics_url}/healthz")[0] == 200
        assert http_get(f"{node.metrics_url}/readyz")[0] == 200
        assert http_get(f"{node.metrics_url}/nope")[0] == 404
        assert http_get(f"{cluster.http_url}/healthz")[0] == 200
        status, page = http_get(f"{cluster.http_url}/")
        assert status == 200 and '<script type="module" src="app.js">' in page
    finally:
        await alice.close()
        await bob.close()


async def test_connections_spread_over_all_nodes(cluster: LocalCluster) -> None:
    clients = [await Client.connect(cluster.url) for _ in range(30)]
    try:
        nodes = {c.node for c in clients}
        assert nodes == {n.node_id for n in cluster.nodes}
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def test_join_storm_does_not_exhaust_redis(cluster: LocalCluster) -> None:
    """Hundreds of concurrent first joins: every one confirmed, two Redis links per node."""
    count = 300
    clients = await asyncio.gather(
        *(Client.connect(cluster.nodes[i % 3].url) for i in range(count))
    )
    try:
        rooms = [new_room() for _ in range(count)]
        results = await asyncio.gather(
            *(c.join(room, f"u{i}") for i, (c, room) in enumerate(zip(clients, rooms, strict=True)))
        )
        assert all(r["type"] == "joined" for r in results)
        redis_clients = await asyncio.to_thread(_redis_client_count, cluster)
        assert redis_clients <= 2 * len(cluster.nodes) + 1  # + the CLIENT LIST probe itself
    finally:
        await asyncio.wait_for(asyncio.gather(*(c.close() for c in clients)), scaled(30))


def _redis_client_count(cluster: LocalCluster) -> int:
    import redis

    probe = redis.Redis.from_url(cluster.redis_url or "")
    try:
        return len(probe.client_list())
    finally:
        probe.close()


async def test_a_message_with_an_id_is_acknowledged_with_its_offset(cluster: LocalCluster) -> None:
    """The ack comes from the publish script's reply (Redis), the message from pub/sub: both
    reach the sender, in either order, with the same offset; others get the message only."""
    alice, bob = await clients_on_distinct_nodes(cluster.url, 2)
    room = new_room()
    try:
        await alice.join(room, "alice")
        await bob.join(room, "bob")
        for n in range(5):
            await alice.send(type="message", text=f"m{n}", id=f"req-{n}")
        acks = [await alice.recv_type("ack", id=f"req-{n}") for n in range(5)]
        echoes = [await alice.recv_type("message", text=f"m{n}") for n in range(5)]
        seen = [await bob.recv_type("message", text=f"m{n}") for n in range(5)]
        assert (
            [a["offset"] for a in acks]
            == [e["offset"] for e in echoes]
            == [s["offset"] for s in seen]
            == [1, 2, 3, 4, 5]
        )
        assert all(
            a["epoch"] == s["epoch"] and a["room"] == room for a, s in zip(acks, seen, strict=True)
        )
        assert all(e["type"] != "ack" for e in bob._buffer)
        await alice.send(type="history", room="elsewhere", id=99)
        refused = await alice.recv_type("error", id=99)
        assert refused["code"] == "not_joined"
    finally:
        await alice.close()
        await bob.close()
