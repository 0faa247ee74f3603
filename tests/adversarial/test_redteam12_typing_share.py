"""Red team 12: two addresses keep a room's typing bucket empty for everybody else.

A room takes 20 `typing` a second after 40, over all nodes, whoever sends them
(`ROOMCAST_ROOM_TYPING_RATE_*`, red team 11), and one client 10 a second after 20
(`ROOMCAST_CLIENT_TYPING_RATE_*`). So two clients, each within its own limits (five connections
at 2/s), empty the room's bucket with their bursts and then keep it empty at their rates: every
other member's `typing` is refused `rate_limited` ("room ... has too much typing"), the messages'
room bucket had the same flaw until red team 10 gave it a reserve. Now a client typing faster
than a person (over a quarter of its own rate, sustained) leaves a quarter of the room's burst to
the others, as heavy message senders do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.adversarial.bursts import join
from tests.adversarial.devcluster_shim import LocalCluster
from tests.adversarial.rawws import RawWebSocket, text
from tests.adversarial.readiness import until_ready

ROOM = "typing-share"
ATTACKERS = ("127.0.0.3", "127.0.0.4")
CONNECTIONS_PER_ATTACKER = 5  # 2/s each: the client's 10/s
CLIENT_TYPING_RATE = 10.0  # docs/security.md's defaults
CLIENT_TYPING_BURST = 20
VICTIM_TYPINGS = 8
VICTIM_INTERVAL_S = 0.5  # a person's page sends one every 1.5 s; within a connection's 2/s


@pytest.fixture
def open_node() -> Iterator[Any]:
    """One node, in-memory broker, open mode, default limits: loopback sources are clients."""
    with LocalCluster(1, nginx=False, redis=False) as cluster:
        yield cluster.nodes[0]


async def _type_at_client_rate(conns: list[RawWebSocket], stop: float) -> None:
    """The client's burst at once, then its rate, round-robin over its connections (each within
    its own 2/s, after a burst of 5): on a schedule, so drift never lets the room refill."""
    for index in range(CLIENT_TYPING_BURST):
        conns[index % len(conns)].send_bytes(text({"type": "typing", "room": ROOM}))
    started, sent = time.monotonic(), 0
    while (now := time.monotonic()) < stop:
        due = int((now - started) * CLIENT_TYPING_RATE)
        while sent < due:
            conns[sent % len(conns)].send_bytes(text({"type": "typing", "room": ROOM}))
            sent += 1
        await asyncio.sleep(0.02)


async def test_two_clients_cannot_refuse_everybody_elses_typing(open_node: Any) -> None:
    await until_ready(open_node)
    port = open_node.port
    watcher = await RawWebSocket.connect("127.0.0.1", port, source="127.0.0.5")
    victim = await RawWebSocket.connect("127.0.0.1", port, source="127.0.0.2")
    attackers = [
        [
            await RawWebSocket.connect("127.0.0.1", port, source=address)
            for _ in range(CONNECTIONS_PER_ATTACKER)
        ]
        for address in ATTACKERS
    ]
    everyone = [watcher, victim, *(ws for conns in attackers for ws in conns)]
    try:
        await join(watcher, ROOM, "watcher")
        await join(victim, ROOM, "victim")
        for conns in attackers:
            for ws in conns:
                await join(ws, ROOM, "typer")
        window = VICTIM_TYPINGS * VICTIM_INTERVAL_S + 1.0
        stop = time.monotonic() + window
        attack = [asyncio.ensure_future(_type_at_client_rate(c, stop)) for c in attackers]
        await asyncio.sleep(0.5)  # the bursts have emptied the room's bucket
        for index in range(VICTIM_TYPINGS):
            victim.send_bytes(text({"type": "typing", "room": ROOM, "id": f"v{index}"}))
            await asyncio.sleep(VICTIM_INTERVAL_S)
        await asyncio.gather(*attack)
        await asyncio.sleep(0.3)  # what is on its way
        refused = [
            e
            for e in victim.received.texts
            if e.get("type") == "error" and str(e.get("id", "")).startswith("v")
        ]
        told = sum(
            1
            for e in watcher.received.texts
            if e.get("type") == "typing" and e["username"] == "victim"
        )
        typings = sum(1 for e in watcher.received.texts if e.get("type") == "typing")
    finally:
        for ws in everyone:
            await ws.close()
    figures = (
        f"{len(ATTACKERS)} addresses x {CONNECTIONS_PER_ATTACKER} connections typing at their "
        f"limits for {window:.1f} s: the victim's typing refused {len(refused)} of "
        f"{VICTIM_TYPINGS} ({sorted({e['code'] for e in refused})}), told to the watcher "
        f"{told}; the watcher got {typings} typing events in all"
    )
    print(figures)
    assert not refused, figures
    assert told == VICTIM_TYPINGS, figures
    # The room's bound is unchanged: its burst and rate (one node: no other node's copy).
    assert typings <= 40 + 20 * (window + 0.5) + 2, figures
