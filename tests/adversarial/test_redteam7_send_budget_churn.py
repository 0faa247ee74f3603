"""Red team 7: the node's send total (``ROOMCAST_SEND_BUFFER_TOTAL_BYTES``) held by silent
sockets that are replaced before they may be shed.

Red team 6 made the node shed, over its total, the clients whose socket has been backed up
``SHED_AFTER_SECONDS`` (1 s) or more, biggest first. An attacker that closes each of its silent
sockets before it has been backed up that long, and opens another in its place (a few addresses,
each far within its handshake rate and connection count), keeps the total full with sockets that
are never due. A reader backed up for a second or two meanwhile (a phone out of coverage during
its room's legal burst) is squeezed at once (it lags: the total is full) and, a second later, is
the only client due, and is dropped. The attacker needs no messages of its own: any busy room
fills its sockets (here four members sending at their legal rate).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from tests.adversarial.bursts import LARGE_TEXT_BYTES, burst, join
from tests.adversarial.devcluster_shim import LocalCluster, scaled
from tests.adversarial.observe import MIB, metric_sum, metrics_text
from tests.adversarial.rawws import RawWebSocket, text
from tests.adversarial.test_redteam5_many_addresses import SilentReader, held_once_settled, source
from tests.adversarial.test_redteam6_send_budget_shedding import lagged, messages_read

TOTAL_BYTES = 4 * MIB
# The attacker: this many addresses, each keeping this many silent sockets in a busy room, each
# closed LIFETIME after it joined (so backed up for well under SHED_AFTER_SECONDS) and replaced
# at once: about 8 handshakes a second per address (100/s are allowed).
ATTACK_ADDRESSES = 3
SOCKETS_PER_ADDRESS = 5
LIFETIME = 0.6
# The busy room: members sending 60 KB messages at the per-connection rate (10/s), two per
# address (the per-client rate is 20/s): 2.4 MB/s to every member.
SENDERS = 4
SEND_INTERVAL = 0.11
# Before the phone's room bursts, the attack has replaced every socket a few times.
WARM_UP = 2.0
# How long the phone does not read (out of coverage) after its room's burst began.
OUT_OF_COVERAGE = 2.5


@pytest.fixture
def cluster() -> Iterator[Any]:
    env = {"ROOMCAST_SEND_BUFFER_TOTAL_BYTES": str(TOTAL_BYTES)}
    with LocalCluster(1, node_env=env) as running:
        yield running


async def busy_room_sender(ws: RawWebSocket, room: str, stop: asyncio.Event) -> None:
    """A member sending large messages at its legal rate until ``stop`` (it reads all the
    room's traffic too; kept from piling up here)."""
    body = "x" * LARGE_TEXT_BYTES
    serial = 0
    while not stop.is_set():
        serial += 1
        ws.send_bytes(text({"type": "message", "room": room, "text": body, "id": f"m{serial}"}))
        ws.received.texts.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SEND_INTERVAL)


@dataclass
class Churn:
    """Silent sockets of one address in ``room``, each closed LIFETIME after it joined and
    replaced by a fresh one."""

    address: str
    port: int
    room: str
    opened: int = 0
    refused: list[str] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        live: deque[SilentReader] = deque()
        try:
            while not stop.is_set():
                self.opened += 1
                try:
                    reader = await SilentReader.join(
                        self.address, self.port, self.room, f"c{self.opened}"
                    )
                except (AssertionError, OSError, TimeoutError) as exc:
                    self.refused.append(repr(exc)[:120])
                    continue
                cast(asyncio.Transport, reader.writer.transport).pause_reading()
                live.append(reader)
                if len(live) > SOCKETS_PER_ADDRESS:
                    live.popleft().close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), LIFETIME / SOCKETS_PER_ADDRESS)
        finally:
            for reader in live:
                reader.close()


async def attack_bites(node: Any) -> None:
    """Until the attack holds the node over its total, or the node sheds for it (then the
    total is not seen exceeded: each write over it sheds at once)."""
    async with asyncio.timeout(scaled(10)):
        while True:
            text = metrics_text(node.metrics_url)
            if metric_sum(text, "roomcast_send_buffered_bytes") > TOTAL_BYTES:
                return
            if metric_sum(text, "roomcast_slow_consumer_drops_total") > 0:
                return
            await asyncio.sleep(0.05)


async def held_samples(node: Any, stop: asyncio.Event, samples: list[float]) -> None:
    while not stop.is_set():
        samples.append(metric_sum(metrics_text(node.metrics_url), "roomcast_send_buffered_bytes"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)


@pytest.mark.parametrize("via", ["direct", "nginx"])
async def test_silent_sockets_replaced_before_they_are_due_do_not_cost_a_reader_its_burst(
    cluster: Any, via: str
) -> None:
    """Before: three addresses replacing five silent sockets each every 0.6 s held the node
    over its 4 MiB total while none of their sockets was ever due; the phone, backed up for its
    room's burst of 20 x 60 KB, lagged at once and read 6 of the 20. Now an address whose
    socket went away backed up counts its next ones as backed up since that one was
    (``CHURN_MEMORY_SECONDS``), and the address that holds the most is shed first: the
    attacker's sockets go, the phone reads all 20. The attacker and the phone connect to the
    node itself or through nginx (whose buffers only delay when the node sees them backed up)."""
    node = cluster.nodes[0]
    port = node.port if via == "direct" else cluster.nginx_port
    busy, legit_room = f"busy-{uuid.uuid4().hex[:8]}", f"legit-{uuid.uuid4().hex[:8]}"
    stop = asyncio.Event()
    senders: list[RawWebSocket] = []
    tasks: list[asyncio.Task[None]] = []
    churns = [Churn(source(index, 40), port, busy) for index in range(ATTACK_ADDRESSES)]
    samples: list[float] = []
    phone: SilentReader | None = None
    friend: RawWebSocket | None = None
    try:
        for index in range(SENDERS):
            ws = await RawWebSocket.connect(
                "127.0.0.1", node.port, headers=[("X-Forwarded-For", source(index // 2, 41))]
            )
            senders.append(ws)
            await join(ws, busy, f"s{index}")
        tasks += [asyncio.ensure_future(busy_room_sender(ws, busy, stop)) for ws in senders]
        tasks += [asyncio.ensure_future(churn.run(stop)) for churn in churns]
        phone = await SilentReader.join(source(0, 42), port, legit_room, "phone")
        cast(asyncio.Transport, phone.writer.transport).pause_reading()
        friend = await RawWebSocket.connect(
            "127.0.0.1", node.port, headers=[("X-Forwarded-For", source(1, 42))]
        )
        await join(friend, legit_room, "friend")
        await attack_bites(node)
        await asyncio.sleep(WARM_UP)  # the attack's time-based: sockets replaced a few times
        tasks.append(asyncio.ensure_future(held_samples(node, stop, samples)))
        text_before = metrics_text(node.metrics_url)
        drops_before = metric_sum(text_before, "roomcast_slow_consumer_drops_total")
        lagged_before = lagged(node)
        started = time.monotonic()
        legal = await burst(friend, legit_room)  # the phone is out of coverage meanwhile
        assert legal.acked == 20, legal
        await asyncio.sleep(max(0.0, OUT_OF_COVERAGE - (time.monotonic() - started)))
        lagged_after = lagged(node)
        drops = metric_sum(metrics_text(node.metrics_url), "roomcast_slow_consumer_drops_total")
        read = await messages_read(phone, legit_room, 20)
        dropped = phone.reader.at_eof()
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(scaled(10)):
                await asyncio.gather(*tasks, return_exceptions=True)
        if phone is not None:
            phone.close()
        if friend is not None:
            await friend.close()
        for ws in senders:
            await ws.close()
    left = await held_once_settled(node)
    opened = sum(churn.opened for churn in churns)
    refused = [reason for churn in churns for reason in churn.refused]
    during = [round(sample / MIB, 1) for sample in samples]
    figures = (
        f"{via}: {ATTACK_ADDRESSES} addresses x {SOCKETS_PER_ADDRESS} silent sockets, each "
        f"replaced after {LIFETIME} s: {opened} opened ({len(refused)} refused "
        f"{refused[:2]}); held while the phone was out of coverage {min(during, default=0)}-"
        f"{max(during, default=0)} MiB (total {TOTAL_BYTES / MIB:.0f}); the phone's burst of "
        f"20 x {LARGE_TEXT_BYTES} B: read {read} of 20, {'dropped' if dropped else 'kept'}; "
        f"clients lagged {lagged_after - lagged_before:+.0f}, shed {drops - drops_before:.0f}; "
        f"held {left:.0f} B after"
    )
    print(figures)
    assert node.process.alive(), figures
    assert read == 20, figures
    assert not dropped, figures
    if via == "direct":  # through nginx its buffers take some of the attacker's bytes first
        assert drops > drops_before, figures  # the attacker's sockets, shed
    assert left == 0, figures
