"""Many clients of one address come back at once after their node is SIGKILLed, and the node's
per-address limits refuse some of them: handshakes with 429 + Retry-After, rejoins with
``rate_limited`` + ``retry_after``. Every client must come back by itself, resume with
``since`` and miss nothing (checked by offset), without hammering the node.

Real redis-server, two nodes and nginx; every client is 127.0.0.1, one address (an office
behind NAT). The address's join bucket is kept in debt during the storm by one of its users
leaving rooms (each leave spends a token, docs/security.md), as people do while others come
back: the rejoins are refused for as long as that lasts, then all pass.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Callable

import pytest
from roomcast_dev.devcluster import LocalCluster

from roomcast.client import (
    Backoff,
    ChatMessage,
    Connected,
    Error,
    Gap,
    Joined,
    JoinError,
    Reconnecting,
    Rejoining,
    RoomcastClient,
)
from tests.integration.test_client import Collector, assert_contiguous
from tests.support.cluster import FAST_ENV, http_get, metric_value
from tests.support.wsclient import scaled

pytestmark = pytest.mark.integration

CLIENTS = 48  # through nginx over two nodes: about half of them on the node that dies
LEAVER_ROOMS = 12  # rooms the leaver leaves one by one: 4 before the kill, 8 after
JOIN_RATE, JOIN_BURST = 2.0, 4  # the address's joins: a leave spends one of these tokens
STORM_ENV = dict(
    FAST_ENV,
    ROOMCAST_HISTORY_SIZE="1000",  # the outage's messages stay in history for the resume
    ROOMCAST_CLIENT_JOIN_RATE_PER_SECOND=str(JOIN_RATE),
    ROOMCAST_CLIENT_JOIN_RATE_BURST=str(JOIN_BURST),
    # Handshakes of the address: fewer than the clients that come back at once.
    ROOMCAST_ADMISSION_PER_ADDRESS_RATE_PER_SECOND="10",
    ROOMCAST_ADMISSION_PER_ADDRESS_BURST="8",
)
QUICK = Backoff(base=0.2, cap=2.0)


async def test_a_reconnect_storm_of_one_address_refused_for_a_while_all_resume() -> None:
    room = "storm-" + uuid.uuid4().hex[:8]
    with LocalCluster(2, nginx=True, node_env=STORM_ENV) as cluster:
        clients = [
            RoomcastClient(cluster.url, f"c{i}", rooms=[room], backoff=QUICK)
            for i in range(CLIENTS)
        ]
        seen = {client: Collector(client) for client in clients}
        for client in clients:  # one at a time: within the handshake burst and rate
            await client.__aenter__()
            await client.join(room, timeout=scaled(20))
        try:
            nodes = [client.node for client in clients]
            victim = max(cluster.nodes, key=lambda n: nodes.count(n.node_id))
            survivor = next(n for n in cluster.nodes if n is not victim)
            doomed = [c for c in clients if c.node == victim.node_id]
            assert len(doomed) >= 8, f"only {len(doomed)} clients on the victim"
            start = {c: seen[c].of(Joined)[-1].offset for c in clients}

            # The sender and the leaver are on the survivor (so is their address's bucket).
            sender = RoomcastClient(survivor.url, "sender", rooms=[room])
            leaver = RoomcastClient(survivor.url, "leaver")
            async with sender, leaver:
                await sender.join(room, timeout=scaled(10))
                parting = [f"{room}-away-{i}" for i in range(LEAVER_ROOMS)]
                for name in parting:  # joins spend nothing of the address's bucket
                    await leaver.join(name, timeout=scaled(10))
                for name in parting[:JOIN_BURST]:  # ... leaves do: now it has no token left
                    await leaver.leave(name, timeout=scaled(10))

                async def leave_slowly() -> None:
                    # One leave per token the bucket earns: it stays empty for 4 s.
                    for name in parting[JOIN_BURST:]:
                        await asyncio.sleep(1 / JOIN_RATE)
                        await leaver.leave(name, timeout=scaled(10))

                sent: list[ChatMessage] = []

                async def stream() -> None:
                    for seq in range(120):
                        outgoing = await sender.send(room, f"m{seq}")
                        sent.append(await asyncio.wait_for(outgoing.wait(), scaled(20)))
                        await asyncio.sleep(0.04)

                streaming = asyncio.create_task(stream())
                await asyncio.sleep(0.3)  # the kill lands mid-stream
                mark = {c: len(seen[c].events) for c in clients}
                victim.process.signal(signal.SIGKILL)
                await leave_slowly()
                await asyncio.wait_for(streaming, scaled(60))
                last = sent[-1].offset

                def caught_up(events: Collector) -> Callable[[], bool]:
                    return lambda: bool(events.messages()) and events.messages()[-1].offset >= last

                for client in clients:
                    await seen[client].until(caught_up(seen[client]), 60, "the stream")
                metrics = http_get(f"{survivor.metrics_url}/metrics")[1]

            for client in clients:
                events = seen[client]
                # Every message once, in order, from the client's first join to the end: none
                # lost to the refusals, none twice.
                assert_contiguous(events.messages(), start[client])
                assert events.messages()[-1].offset == last
                assert not events.of(Gap)
                assert client.position(room) == (sent[-1].epoch, last)
            for client in doomed:
                assert client.node == survivor.node_id
                rejoin = [j for j in seen[client].of(Joined) if j.recovered is not None]
                assert rejoin and rejoin[-1].recovered is True  # resumed with `since`

            after_kill = {c: seen[c].events[mark[c] :] for c in clients}
            rejoining = [e for c in doomed for e in after_kill[c] if isinstance(e, Rejoining)]
            handshakes_429 = [
                e
                for c in doomed
                for e in after_kill[c]
                if isinstance(e, Reconnecting) and e.cause == "HTTP 429"
            ]
            # Refusals really happened, of both kinds, and the node counted them.
            assert rejoining, "no rejoin was refused: the test proves nothing"
            assert all(e.code == "rate_limited" and e.room == room for e in rejoining)
            assert handshakes_429, "no handshake was refused"
            refused = metric_value(
                metrics, "roomcast_frames_rejected_total", {"code": "rate_limited"}
            )
            assert refused >= len(rejoining)
            # Without hammering: each retry waits the node's hint (the bucket had no token for
            # about 4 s, each refusal said when the next one comes) plus jitter.
            assert all(e.delay >= 0.01 for e in rejoining)
            worst = max(len(seen[c].of(Rejoining)) for c in doomed)
            assert worst <= 12, f"a client was refused {worst} times"
            # Clients that stayed on the survivor never lost their room.
            for client in clients:
                if client not in doomed:
                    assert not seen[client].of(Rejoining)
        finally:
            for collector in seen.values():
                if not collector.finished():
                    await collector.stop()
            for client in clients:
                await client.close()


async def test_kept_rooms_over_the_join_rate_are_retried_an_asked_one_fails() -> None:
    # One connection may join one room, then one every 2 s: a client given three rooms at start
    # gets them all, one by one as the node's retry_after says; a join() of a new room the
    # application asks for meanwhile is refused to it (JoinError with the hint) and forgotten.
    env = dict(FAST_ENV, ROOMCAST_JOIN_RATE_PER_SECOND="0.5", ROOMCAST_JOIN_RATE_BURST="1")
    rooms = [f"kept-{uuid.uuid4().hex[:6]}-{i}" for i in range(3)]
    with LocalCluster(1, redis=False, nginx=False, node_env=env) as cluster:
        client = RoomcastClient(cluster.nodes[0].url, "ann", rooms=rooms, backoff=QUICK)
        async with client:
            events = Collector(client)
            await events.until(lambda: len(events.of(Rejoining)) >= 2, 10, "two refusals")
            with pytest.raises(JoinError) as refused:
                await client.join("asked-" + uuid.uuid4().hex[:6], timeout=scaled(10))
            assert refused.value.error.code == "rate_limited"
            assert refused.value.error.retry_after is not None
            assert 0 < refused.value.error.retry_after <= 2.0
            await events.until(
                lambda: set(rooms) <= {j.room for j in events.of(Joined)}, 30, "the three rooms"
            )
            assert {j.room for j in events.of(Joined)} == set(rooms)
            retries = events.of(Rejoining)
            # Each retry waited the node's hint (the rest of the 2 s a token takes) plus jitter:
            # a few retries per room, not one per round trip.
            assert all(e.code == "rate_limited" and e.delay > 0 for e in retries)
            assert len(retries) <= 12
            assert all(client.position(room) is not None for room in rooms)
            await events.stop()


async def test_rejoins_refused_unread_over_the_receive_budget_are_sent_again() -> None:
    # The address's receive budget (4 KiB, then 1 KiB/s; each frame costs 1 KiB more than its
    # bytes) takes 3 joins at once: the node refuses the next frames unread, with a
    # `rate_limited` naming no room. The joins it never read get no answer; the client sends
    # them again after request_timeout, on the same connection, until every room is joined.
    env = dict(
        FAST_ENV,
        ROOMCAST_MAX_FRAME_BYTES="256",
        ROOMCAST_CLIENT_RECEIVE_BYTES_BURST="4096",
        ROOMCAST_CLIENT_RECEIVE_BYTES_PER_SECOND="1024",
    )
    rooms = [f"budget-{uuid.uuid4().hex[:6]}-{i}" for i in range(6)]
    with LocalCluster(1, redis=False, nginx=False, node_env=env) as cluster:
        client = RoomcastClient(
            cluster.nodes[0].url, "ann", rooms=rooms, request_timeout=1.0, ping_interval=None
        )
        async with client:
            events = Collector(client)
            await events.until(
                lambda: set(rooms) <= {j.room for j in events.of(Joined)}, 40, "the six rooms"
            )
            unnamed = [e for e in events.events if isinstance(e, Error) and e.room is None]
            assert unnamed and all(e.code == "rate_limited" for e in unnamed)
            resent = events.of(Rejoining)
            assert resent and all(e.reason.startswith("no answer to the join") for e in resent)
            assert len(events.of(Connected)) == 1  # the same connection all along
            await events.stop()
