"""Red team 6: the node-wide total for backed-up clients (``ROOMCAST_SEND_BUFFER_TOTAL_BYTES``)
turned against the clients that read.

An attacker fills the total with its own readers that never read, each well within its own
bound (``ROOMCAST_SEND_BUFFER_BYTES``), so none of them lags or is dropped. Over the total, the
node used to squeeze whoever wrote next: a legitimate reader whose socket backed up for a moment
(a phone out of coverage during a room's legal burst) lagged at once, while the attacker's
sockets, which had held the bytes for seconds, stayed. A server sheds the consumers that have
been backed up longest and hold the most first; the total is set small here (4 MiB) so a few
sockets show it in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest

from tests.adversarial.bursts import LARGE_TEXT_BYTES, burst, join
from tests.adversarial.devcluster_shim import LocalCluster, scaled
from tests.adversarial.httpraw import EventStreamReader
from tests.adversarial.observe import MIB, kernel_tcp_bytes, metric_sum, metrics_text, rss_bytes
from tests.adversarial.rawws import OP_TEXT, RawWebSocket
from tests.adversarial.test_redteam5_many_addresses import SilentReader, held_once_settled, source
from tests.support.attacks import read_server_frame

TOTAL_BYTES = 4 * MIB
# Each attacker socket pins ~0.7 MB of a 1.2 MB burst in the node (the rest fills its kernel
# buffers): six of them are over the total, none over its own 1 MiB bound.
ATTACKERS = 6
ATTACKERS_PER_ADDRESS = 2
# How long a socket must have been backed up before it may be shed for the node's total
# (sendbuffer.SHED_AFTER_SECONDS), and a little more.
BACKED_UP_FOR = 1.5


@pytest.fixture
def node() -> Iterator[Any]:
    env = {"ROOMCAST_SEND_BUFFER_TOTAL_BYTES": str(TOTAL_BYTES)}
    with LocalCluster(1, nginx=False, node_env=env) as cluster:
        yield cluster.nodes[0]


async def silent(address: str, port: int, room: str, name: str) -> SilentReader:
    reader = await SilentReader.join(address, port, room, name)
    # Not even the client's own stream buffer takes more: the node's socket backs up.
    cast(asyncio.Transport, reader.writer.transport).pause_reading()
    return reader


async def messages_read(reader: SilentReader, room: str, count: int) -> int:
    """Read until ``count`` chat messages of ``room`` came (or the connection ended)."""
    cast(asyncio.Transport, reader.writer.transport).resume_reading()
    seen = 0
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        async with asyncio.timeout(scaled(20)):
            while seen < count:
                first, payload = await read_server_frame(reader.reader)
                opcode = first & 0x0F
                if opcode == 0x8:
                    return seen  # closed (1013)
                if opcode != OP_TEXT:
                    continue
                event = json.loads(payload)
                if event.get("type") == "message" and event.get("room") == room:
                    seen += 1
    return seen


async def held_over(node: Any, total: int) -> None:
    """Until the node holds more than ``total`` for backed-up clients (polled: a gauge)."""
    held = 0.0
    async with asyncio.timeout(scaled(10)):
        while held <= total:
            held = metric_sum(metrics_text(node.metrics_url), "roomcast_send_buffered_bytes")
            await asyncio.sleep(0.05)


def lagged(node: Any) -> float:
    text = metrics_text(node.metrics_url)
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("roomcast_lags_total") and 'outcome="lagged"' in line
    )


async def test_silent_sockets_that_fill_the_total_are_shed_before_a_reader_that_reads(
    node: Any,
) -> None:
    """Before: over the total, the legitimate reader (backed up for its room's one burst, well
    within its own bound) lagged at once (roomcast_lags_total lagged +1) while the six silent
    sockets that filled the total stayed open. Now the silent ones, backed up longest, are
    dropped until the node is within its total, and the reader is not squeezed."""
    attacked, legit_room = f"fill-{uuid.uuid4().hex[:8]}", f"legit-{uuid.uuid4().hex[:8]}"
    attackers: list[SilentReader] = []
    senders: list[RawWebSocket] = []
    legit: SilentReader | None = None
    rss_before = rss_bytes(node.process.pid)
    kernel_before = kernel_tcp_bytes()
    try:
        for index in range(ATTACKERS):
            address = source(index // ATTACKERS_PER_ADDRESS, 30)
            attackers.append(await silent(address, node.port, attacked, f"a{index}"))
        legit = await silent(source(0, 31), node.port, legit_room, "phone")
        for room, name in ((attacked, "attacker"), (legit_room, "friend")):
            ws = await RawWebSocket.connect(
                "127.0.0.1", node.port, headers=[("X-Forwarded-For", source(len(senders), 32))]
            )
            senders.append(ws)
            await join(ws, room, name)
        filled = await burst(senders[0], attacked)
        assert filled.acked == 20, filled
        await held_over(node, TOTAL_BYTES)
        # The attacker's sockets have now been backed up for a while (time must pass here).
        await asyncio.sleep(BACKED_UP_FOR)
        text = metrics_text(node.metrics_url)
        held_mib = metric_sum(text, "roomcast_send_buffered_bytes") / MIB
        drops_before = metric_sum(text, "roomcast_slow_consumer_drops_total")
        lagged_before = lagged(node)
        legal = await burst(senders[1], legit_room)  # the phone is out of coverage meanwhile
        assert legal.acked == 20, legal
        lagged_after = lagged(node)
        text = metrics_text(node.metrics_url)
        drops = metric_sum(text, "roomcast_slow_consumer_drops_total") - drops_before
        growth = rss_bytes(node.process.pid) - rss_before + kernel_tcp_bytes() - kernel_before
        read = await messages_read(legit, legit_room, 20)
    finally:
        for reader in attackers:
            reader.close()
        if legit is not None:
            legit.close()
        for ws in senders:
            await ws.close()
    left = await held_once_settled(node)
    figures = (
        f"held {held_mib:.1f} MiB by {ATTACKERS} silent sockets (total {TOTAL_BYTES / MIB:.0f}); "
        f"the reader's burst of 20 x {LARGE_TEXT_BYTES} B: reader lagged "
        f"{lagged_after - lagged_before:+.0f}, read {read} of 20; attacker sockets dropped "
        f"{drops:.0f}; node RSS + kernel TCP {growth / MIB:+.1f} MiB; held {left:.0f} B after"
    )
    print(figures)
    assert node.process.alive(), figures
    assert read == 20, figures
    assert lagged_after == lagged_before, figures
    assert drops >= 1, figures
    assert left == 0, figures


async def test_the_total_returns_to_zero_after_sheds_lags_and_silent_event_streams(
    node: Any,
) -> None:
    """Every path that counts in the total gives its bytes back: silent WebSockets and silent
    event streams shed over the total (aborted), a reader that lagged and drained, and the
    rest closed by their clients. A leak upward would leave the node shedding for good; one
    below zero would let it hold more than its total."""
    room = f"drift-{uuid.uuid4().hex[:8]}"
    silent_sockets: list[SilentReader] = []
    streams: list[EventStreamReader] = []
    sender: RawWebSocket | None = None
    samples: list[float] = []
    try:
        for index in range(ATTACKERS):
            address = source(index // ATTACKERS_PER_ADDRESS, 33)
            silent_sockets.append(await silent(address, node.port, room, f"w{index}"))
        for _ in range(3):
            stream = await EventStreamReader.open(node.port, f"/api/rooms/{room}/events")
            assert stream.status == 200, stream.status
            cast(asyncio.Transport, stream.writer.transport).pause_reading()
            streams.append(stream)
        slow = await silent(source(9, 33), node.port, room, "slow")
        sender = await RawWebSocket.connect(
            "127.0.0.1", node.port, headers=[("X-Forwarded-For", source(0, 34))]
        )
        await join(sender, room, "sender")
        first = await burst(sender, room)
        await held_over(node, TOTAL_BYTES // 2)  # the first burst squeezed some already
        samples.append(metric_sum(metrics_text(node.metrics_url), "roomcast_send_buffered_bytes"))
        await asyncio.sleep(BACKED_UP_FOR)  # the silent ones are now due to be shed
        second = await burst(sender, room)
        samples.append(metric_sum(metrics_text(node.metrics_url), "roomcast_send_buffered_bytes"))
        read = await messages_read(slow, room, first.acked + second.acked)
        samples.append(metric_sum(metrics_text(node.metrics_url), "roomcast_send_buffered_bytes"))
        drops = metric_sum(metrics_text(node.metrics_url), "roomcast_slow_consumer_drops_total")
    finally:
        for reader in silent_sockets:
            reader.close()
        for stream in streams:
            stream.close()
        if sender is not None:
            await sender.close()
    left = await held_once_settled(node)
    figures = (
        f"held samples {[round(sample / MIB, 2) for sample in samples]} MiB (total "
        f"{TOTAL_BYTES / MIB:.0f}); slow reader read {read} of "
        f"{first.acked + second.acked}; dropped {drops:.0f}; held {left:.0f} B after"
    )
    print(figures)
    assert min(samples) >= 0, figures
    assert samples[1] <= TOTAL_BYTES + 2 * MIB, figures  # within the total plus a turn's writes
    assert read == first.acked + second.acked, figures
    assert left == 0, figures
