"""The history-write bytes per client (red team 11): what its messages make Redis keep."""

from __future__ import annotations

from roomcast.core.ratelimit import (
    MESSAGE_KEPT_OVERHEAD,
    ROOM_MADE_BURST_SHARE,
    MessageRefusal,
    room_made_cost,
)
from tests.support.wsharness import settle
from tests.unit.test_node import make_env

TEXT = "x" * 1000
COST = len(TEXT) + MESSAGE_KEPT_OVERHEAD
# Refills too slowly to matter within a test; holds one message of TEXT and a half.
LIMITS = {"client_history_write_rate": (1.0, COST + COST // 2)}


async def test_a_message_over_the_clients_written_bytes_is_refused_and_spends_nothing() -> None:
    env = await make_env(node_limits=LIMITS)
    client = await env.joined("ann", "r")
    client.events()
    for index in range(3):
        client.send_json({"type": "message", "room": "r", "text": TEXT, "id": index})
    await settle()
    answers = {e["id"]: e for e in client.events() if e["type"] in ("ack", "error")}
    assert [answers[index]["type"] for index in range(3)] == ["ack", "error", "error"], answers
    assert answers[1]["code"] == "rate_limited" and "history" in answers[1]["reason"]
    # Refused for its bytes, it spent none of the client's message tokens (40 at once).
    (conn,) = env.node.connections
    bucket = env.node._client_messages.get(conn.client_key)
    assert bucket is not None and bucket.level > bucket.burst - 1.5


async def test_an_http_post_shares_the_bytes_and_says_when_it_would_pass() -> None:
    env = await make_env(node_limits=LIMITS)
    assert env.node.admit_message("ip:192.0.2.1", len(TEXT)) == 0
    refused = env.node.admit_message("ip:192.0.2.1", len(TEXT))
    assert isinstance(refused, MessageRefusal) and "history" in refused.reason
    assert COST // 2 - 1 < refused.retry_after < COST  # half a message owed, at 1 byte/s
    assert env.node.admit_message("ip:192.0.2.2", len(TEXT)) == 0  # another client's own


async def test_a_message_that_makes_its_room_spends_what_its_offsets_keep() -> None:
    made = room_made_cost(600.0, 86400.0)
    assert made == 43_200  # 300 bytes for a day, as history bytes kept for 600 s
    burst = made + 2 * COST + COST // 2  # the room, two messages and half of a third
    env = await make_env(node_limits={"client_history_write_rate": (1.0, burst)})
    client = await env.joined("ann", "r")
    client.events()
    for index in range(3):  # the first makes the room (offset 1): it spends made + COST
        client.send_json({"type": "message", "room": "r", "text": TEXT, "id": index})
        await settle()
    answers = {e["id"]: e for e in client.events() if e["type"] in ("ack", "error")}
    assert [answers[index]["type"] for index in range(3)] == ["ack", "ack", "error"], answers


def test_a_new_room_costs_at_most_a_share_of_the_burst() -> None:
    """With a history ttl of a second, one new room cost 26 MB against a 12 MiB burst: the
    client's next messages were refused for minutes. Capped at a sixteenth of the burst."""
    burst = 12 * 1024 * 1024
    assert room_made_cost(600.0, 86400.0, burst) == room_made_cost(600.0, 86400.0) == 43_200
    assert room_made_cost(1.0, 86400.0) > burst
    assert room_made_cost(1.0, 86400.0, burst) == burst // ROOM_MADE_BURST_SHARE
