"""docs/security.md's limits on what one connection, and one client's connections together,
may send (messages 10/s and 20 at once, typing 2/s and 5, joins 1/s and 20 per connection; the
client's messages 20/s and 40, bytes received 1.5 MiB/s and 3 MiB), measured at the SHIPPED
defaults against a real node and redis-server: sending as fast as it can, what gets through may
not exceed the burst plus the rate times the time it took, each refusal is a ``rate_limited``
error naming the limit, and what the doc promises beyond that holds (leaves are never refused;
ignoring typing refusals is closed 1008 ``flood``; closing and reopening connections buys no
fresh burst). The unit tests hold the same code with small settings (tests/unit/test_node.py,
tests/unit/test_transport.py); these hold the defaults the table states.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Iterator

import pytest
from roomcast_dev.devcluster import LocalCluster
from websockets.exceptions import ConnectionClosed

from tests.support.wsclient import Client, Event

pytestmark = pytest.mark.integration

ROOM = "limits"
SENT = 30  # well over every burst below, well under the frame bucket's 100


@pytest.fixture
def node() -> Iterator[LocalCluster]:
    """One node at the shipped defaults (no node_env): every test its own, since the open-mode
    client buckets are per address and all of these come from 127.0.0.1."""
    with LocalCluster(1, nginx=False) as running:
        yield running


def within(rate: float, burst: int, seconds: float) -> int:
    """The most a token bucket lets through in ``seconds``, starting full."""
    return burst + math.floor(rate * seconds)


async def answers(client: Client, count: int, wanted: Callable[[Event], bool]) -> list[Event]:
    """The next ``count`` events ``wanted`` accepts (others are kept for later reads)."""
    return [await client.recv_where(wanted) for _ in range(count)]


def refused_for_rate(event: Event) -> bool:
    return event["type"] == "error" and event.get("code") == "rate_limited"


async def test_messages_per_connection_10_a_second_20_at_once(node: LocalCluster) -> None:
    sender = await Client.connect(node.nodes[0].url)
    try:
        await sender.join(ROOM, "sender")
        started = time.monotonic()
        for index in range(SENT):
            await sender.send(type="message", text=f"m{index}", id=f"m{index}")
        replies = await answers(sender, SENT, lambda e: e["type"] == "ack" or refused_for_rate(e))
        took = time.monotonic() - started
        acked = [r for r in replies if r["type"] == "ack"]
        refused = [r for r in replies if r["type"] == "error"]
        print(f"\n{SENT} messages at once: {len(acked)} acknowledged in {took:.2f} s")
        assert 20 <= len(acked) <= within(10, 20, took)
        assert all("message" in r["reason"] for r in refused), refused
        # Each refusal names the frame it refuses (the sender can tell which to send again).
        assert sorted(r["id"] for r in replies) == sorted(f"m{i}" for i in range(SENT))
    finally:
        await sender.close()


async def test_typing_per_connection_2_a_second_5_at_once_then_a_flood(
    node: LocalCluster,
) -> None:
    typist = await Client.connect(node.nodes[0].url)
    reader = await Client.connect(node.nodes[0].url)
    try:
        await reader.join(ROOM, "reader")
        await typist.join(ROOM, "typist")
        typings = 10  # its 5 refusals stay within the typing burst: rate_limited, not closed
        started = time.monotonic()
        for _ in range(typings):
            await typist.send(type="typing")
        await typist.send(type="message", text="mark")
        seen = await reader.events_until_message("mark")
        took = time.monotonic() - started
        typed = sum(e["type"] == "typing" for e in seen)
        print(f"\n{typings} typing at once: {typed} reached the room in {took:.2f} s")
        assert 5 <= typed <= within(2, 5, took)
        refused = await answers(typist, typings - typed, refused_for_rate)
        assert all("typing" in r["reason"] for r in refused), refused
        # Ignoring the refusals: closed 1008 within a few more (a burst of strikes).
        try:
            for _ in range(SENT):
                await typist.send(type="typing")
        except ConnectionClosed:
            pass
        code, reason = await typist.expect_close()
        assert code == 1008 and reason is not None and "flood" in reason, (code, reason)
    finally:
        await typist.close()
        await reader.close()


async def test_joins_per_connection_1_a_second_20_at_once_leaves_never_refused(
    node: LocalCluster,
) -> None:
    churner = await Client.connect(node.nodes[0].url)
    try:
        started = time.monotonic()
        for index in range(SENT):
            # Within the 16 rooms a connection may hold: each join is followed by its leave.
            await churner.send(type="join", room=f"{ROOM}-{index}", username="churner")
            await churner.send(type="leave", room=f"{ROOM}-{index}")
        replies = await answers(
            churner, SENT, lambda e: e["type"] == "joined" or refused_for_rate(e)
        )
        took = time.monotonic() - started
        joined = [r for r in replies if r["type"] == "joined"]
        refused = [r for r in replies if r["type"] == "error"]
        print(f"\n{SENT} joins at once: {len(joined)} joined in {took:.2f} s")
        assert 20 <= len(joined) <= within(1, 20, took)
        assert all(r.get("retry_after", 0) > 0 for r in refused), refused
        # Every room it got into, it could leave.
        for room in (r["room"] for r in joined):
            await churner.recv_type("left", room=room)
    finally:
        await churner.close()


async def acknowledged(client: Client, tag: str, count: int) -> int:
    """Send ``count`` messages at once; how many were acknowledged."""
    for index in range(count):
        await client.send(type="message", text=f"{tag}{index}", id=f"{tag}{index}")
    replies = await answers(client, count, lambda e: e["type"] == "ack" or refused_for_rate(e))
    return sum(r["type"] == "ack" for r in replies)


async def test_closing_and_reopening_connections_buys_no_fresh_burst(node: LocalCluster) -> None:
    """docs/security.md: "A shared bucket (client, room) outlives the connections holding it
    until it would have refilled, so closing and reopening connections buys no fresh burst".
    Three connections one after the other, each spending its own burst of 20 messages: without
    the client's bucket (20/s, 40 at once) they would get 60 through at once."""
    started = time.monotonic()
    through = 0
    for tag in ("a", "b", "c"):
        sender = await Client.connect(node.nodes[0].url)
        try:
            await sender.join(f"{ROOM}-{tag}", "sender")
            through += await acknowledged(sender, tag, 20)
        finally:
            await sender.close()
    took = time.monotonic() - started
    print(f"\n3 connections x 20 messages, one after the other: {through} through in {took:.2f} s")
    assert 40 <= through <= within(20, 40, took)


# The receive budget's defaults (docs/security.md: 1.5 MiB/s, 3 MiB; each frame costs its
# payload + 1 KiB) and a frame near the 64 KiB limit.
RECEIVE_RATE, RECEIVE_BURST, FRAME_OVERHEAD = 1536 * 1024, 3 * 1024 * 1024, 1024
BIG_TEXT = "x" * 64_000


async def frames_past_the_byte_budget(client: Client, tag: str, count: int) -> int:
    """Send ``count`` large messages at once; how many got past the byte budget: those are
    answered by id (``ack``, or the message limiter's refusal), the others refused unparsed
    (an error without an id)."""
    for index in range(count):
        await client.send(type="message", text=BIG_TEXT, id=f"{tag}{index:02d}")
    replies = await answers(client, count, lambda e: e["type"] in ("ack", "error"))
    unparsed = [r for r in replies if "id" not in r]
    assert {r["code"] for r in unparsed} <= {"rate_limited"}, unparsed
    return count - len(unparsed)


async def test_bytes_received_per_client_over_its_connections(node: LocalCluster) -> None:
    """Three connections of one client, each sending 30 messages of 64 KB at once (5.9 MB):
    together they get past the byte budget no more than its burst plus its rate, and at least
    a whole burst."""
    senders = [await Client.connect(node.nodes[0].url) for _ in range(3)]
    try:
        for index, sender in enumerate(senders):
            await sender.join(ROOM, f"sender{index}")
        size = (
            len(json.dumps({"type": "message", "text": BIG_TEXT, "id": "s0-00"}).encode())
            + FRAME_OVERHEAD
        )
        started = time.monotonic()
        passed = await asyncio.gather(
            *(frames_past_the_byte_budget(s, f"s{i}-", 30) for i, s in enumerate(senders))
        )
        took = time.monotonic() - started
        print(
            f"\n3 connections x 30 frames of {size} B at once: {sum(passed)} past the byte "
            f"budget in {took:.2f} s"
        )
        assert RECEIVE_BURST // size <= sum(passed) <= (RECEIVE_BURST + RECEIVE_RATE * took) // size
    finally:
        for sender in senders:
            await sender.close()
