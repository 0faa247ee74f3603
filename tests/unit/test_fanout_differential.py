"""The fan-out's write path (Outbox -> Connection.write_pending -> SendBuffer.offer) against the
code it replaced: every recipient of every message must get the same bytes, the same backed-up
clients must lag, be refused, squeezed or shed, and every metric sample must be the same.

``SendBuffer.offer`` used to ask ``self.shedding`` (a property calling the budget's
``exhausted`` property) for every recipient; it now compares the node's total with its limit
first and calls ``exhausted`` only over it. ``Outbox.fan_out`` tests a recipient's pending
frames for emptiness instead of calling len() (instructions per recipient: bench/README.md,
fifth pass). The references below are the old methods, word for word.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from roomcast.broker import HistoryLimits
from roomcast.broker.memory import MemoryBroker
from roomcast.core.members import Member
from roomcast.core.node import Node
from roomcast.core.user_ids import UserIds
from roomcast.net.sendbuffer import SendBudget, SendBuffer
from roomcast.net.transport import Outbox, WebSocketServer
from roomcast.runtime.config import Settings
from roomcast.runtime.metrics import Metrics
from tests.support.wsharness import INSTANCE, WsClient, make_settings, settle
from tests.unit.test_sendbuffer import Transport


def reference_offer(self: SendBuffer, frames: list[bytes], size: int) -> int:
    """SendBuffer.offer before the fifth pass (bench/README.md)."""
    if self.shed_off:
        return 0
    transport = self._transport
    if (
        not self.paused
        and not self._held
        and size <= self._limit
        and not transport.get_write_buffer_size()
        and not self.shedding
    ):
        if len(frames) == 1:
            transport.write(frames[0])
        else:
            transport.writelines(frames)
        return 0
    if not self.write_pieces(frames, size):
        return -1
    return 1 if self.over else 0


class KernelTransport(Transport):
    """The kernel takes the first 100 bytes of each write; the rest waits in the transport."""

    def write(self, data: bytes) -> None:
        super().write(data)
        self.buffered += max(0, len(data) - 100)

    def writelines(self, pieces: list[bytes]) -> None:
        super().writelines(pieces)
        self.buffered += max(0, sum(map(len, pieces)) - 100)


def reference_fan_out(self: Outbox, members: Iterable[Member], frame: bytes, exclude: str) -> None:
    """Outbox.fan_out before the fifth pass (a len() call per recipient)."""
    dirty = self._dirty
    for conn in members:
        if conn.id != exclude and not conn.lagging:
            pending = conn.pending
            pending.append(frame)
            if len(pending) == 1:
                dirty.append(conn)
    if dirty and not self._scheduled:
        self._scheduled = True
        self._loop.call_soon(self.flush)


# One buffer's state before an offer: what is in its transport, whether the transport paused,
# whether it holds bytes back, and the node's total: none, within it, over it with a client to
# shed (backed up long enough), over it with nobody to shed yet.
BUFFERED = [0, 10, 990, 5000]
BUDGETS = ["none", "within", "over, sheds", "over, nobody to shed"]


@dataclass(frozen=True)
class Offered:
    result: int
    calls: list[list[bytes]]
    budget_held: int | None
    hog_aborted: bool
    aborted: bool
    squeezes: int
    sheds: int
    shed_off: bool


def offer_outcome(
    buffered: int, paused: bool, held: bool, budget_kind: str, frames: list[bytes]
) -> Offered:
    now = [1000.0]
    squeezes: list[None] = []
    sheds: list[None] = []
    budget = None
    hog = None
    if budget_kind != "none":
        budget = SendBudget(
            limit=2000, page=300, on_squeeze=lambda: squeezes.append(None),
            on_shed=lambda: sheds.append(None), clock=lambda: now[0],
        )  # fmt: skip
        if budget_kind.startswith("over"):
            hog_transport = Transport()
            hog = (SendBuffer(cast(asyncio.Transport, hog_transport), 10_000, budget, "h"),
                   hog_transport)  # fmt: skip
            hog_transport.buffered = 3000
            hog[0].pause()
            if budget_kind == "over, sheds":
                now[0] += 60.0  # backed up long enough to be shed
    transport = KernelTransport()
    send = SendBuffer(cast(asyncio.Transport, transport), 1000, budget, "c")
    transport.buffered = buffered
    if paused or held:
        send.pause()
        if held:
            send.write(b"h" * 7, force=True)  # held back while paused
        if not paused:
            send.paused = False  # held bytes, transport no longer paused (resume pending)
    size = sum(map(len, frames))
    result = send.offer(frames, size)
    return Offered(
        result, transport.calls, None if budget is None else budget.held,
        hog is not None and hog[1].aborted, transport.aborted, len(squeezes), len(sheds),
        send.shed_off,
    )  # fmt: skip


@pytest.mark.parametrize("budget_kind", BUDGETS)
def test_offer_does_what_it_did_for_every_buffer_and_budget_state(budget_kind: str) -> None:
    frame_sets = [[b"a" * 50], [b"b" * 100, b"c" * 150], [b"d" * 400], [b"e" * 1200]]
    cases = itertools.product(BUFFERED, [False, True], [False, True], frame_sets)
    seen = set()
    for buffered, paused, held, frames in cases:
        native = offer_outcome(buffered, paused, held, budget_kind, frames)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(SendBuffer, "offer", reference_offer)
            reference = offer_outcome(buffered, paused, held, budget_kind, frames)
        assert native == reference, (buffered, paused, held, frames)
        seen.add((native.result, native.sheds > 0, native.squeezes > 0))
    # The grid reaches written and refused outcomes, over the client's limit where the node is
    # within its total, and sheds and squeezes where it is not.
    results = {result for result, _, _ in seen}
    assert results == ({-1, 0} if budget_kind == "over, nobody to shed" else {-1, 0, 1})
    if budget_kind == "over, sheds":
        assert any(shed for _, shed, _ in seen)
    if budget_kind == "over, nobody to shed":
        assert any(squeezed for _, _, squeezed in seen)


# A room's history epoch is random per broker (the same length each time).
EPOCH = re.compile(rb'"epoch":"[0-9a-f]+"')


@dataclass(frozen=True)
class FannedOut:
    written: list[bytes]  # what each client's transport got after the joins, byte for byte
    aborted: list[bool]
    lagging: list[bool]
    closed: list[bool]
    exposition: list[str]  # every metric sample but the _created timestamps


async def fanout_outcome(settings: Settings) -> FannedOut:
    """A room of clients in every state a recipient can be in, and messages to it: one at a
    time and several in one loop turn, small and larger than a page of the node's total."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    node = Node(settings.node_id, 16, settings.max_frame_bytes, metrics)
    broker = MemoryBroker(node.on_broker_message, limits=HistoryLimits(size=100))
    await broker.start()
    server = WebSocketServer(node, settings, metrics, asyncio.get_running_loop(), INSTANCE)
    node.attach(broker, server.outbox)
    try:
        clients = [WsClient(server, compress=i == 5) for i in range(9)]
        for i, client in enumerate(clients):
            client.send_json({"type": "join", "room": "r", "username": f"u{i}"})
            await settle()
        await settle()
        for client in clients:
            client.transport.take()
        sender = clients[0]
        # 1: backed up within its limit; 2: paused at its high-water mark; 3: holds more than
        # its limit; 4: backed up with more than the node's smaller total;
        # 5: compressed; 6: closed; 7, 8: plain. (Shedding needs seconds of real time: the offer
        # test above covers it.)
        clients[1].transport.write_buffer_size = 200
        clients[2].transport.write_buffer_size = 900
        clients[2].conn.pause_writing()
        clients[3].transport.write_buffer_size = settings.send_buffer_bytes + 1
        clients[3].conn.pause_writing()
        clients[4].transport.write_buffer_size = 1500
        clients[4].conn.pause_writing()
        clients[6].disconnect()
        texts = ["hi", "x" * 40, "y" * 700, "z" * 1500]
        for text in texts:
            sender.send_json({"type": "message", "room": "r", "text": text})
            await settle()
        # Several in one read: one loop turn, several frames per recipient.
        for text in texts:
            sender.send_json({"type": "message", "room": "r", "text": text}, push=False)
        sender.push()
        await settle()
        return FannedOut(
            [EPOCH.sub(b'"epoch":"-"', client.transport.take()) for client in clients],
            [client.transport.aborted for client in clients],
            [client.conn.lagging for client in clients],
            [client.conn.closed for client in clients],
            [line for line in generate_latest(registry).decode().splitlines()
             if "_created" not in line],
        )  # fmt: skip
    finally:
        await broker.stop()


def numbered_anonymous_ids(patch: pytest.MonkeyPatch) -> None:
    """Open-mode user ids are random: numbered afresh for each run, both runs write the same."""
    numbers = itertools.count()
    patch.setattr(UserIds, "anonymous", staticmethod(lambda: f"anonymous-{next(numbers)}"))


@pytest.mark.parametrize("total", [1024**3, 2000])
async def test_a_fan_out_writes_every_byte_and_sample_as_before(
    total: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fixed clock: the messages' timestamps and the fan-out latency are the same in both runs.
    monkeypatch.setattr(time, "time", lambda: 1_800_000_000.0)
    settings = make_settings(
        send_buffer_bytes=1000,
        send_buffer_total_bytes=total,
        rate_limit_per_second=1e6,
        rate_limit_burst=10**6,
    )
    numbered_anonymous_ids(monkeypatch)
    native = await fanout_outcome(settings)
    with pytest.MonkeyPatch.context() as patch:
        numbered_anonymous_ids(patch)
        patch.setattr(SendBuffer, "offer", reference_offer)
        patch.setattr(Outbox, "fan_out", reference_fan_out)
        reference = await fanout_outcome(settings)
    assert native == reference
    # The plain members got all 8 messages.
    assert native.written[7].count(b'"message"') == 8 == native.written[8].count(b'"message"')
    assert native.written[6] == b""  # closed before the messages
    assert native.lagging == [False, True, True, True, True, False, False, False, False]
    # Over the node's total for backed-up clients, the backed-up ones are squeezed (refused).
    squeezes = next(s for s in native.exposition if s.startswith("roomcast_send_budget_squeezes"))
    assert squeezes.endswith(" 0.0") == (total != 2000), squeezes
