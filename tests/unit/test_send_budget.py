"""SendBudget: what the node holds for backed-up clients, over all of them, and the shedding
over it (ROOMCAST_SEND_BUFFER_TOTAL_BYTES)."""

from __future__ import annotations

import asyncio
from typing import cast

from roomcast.net.sendbuffer import SHED_AFTER_SECONDS, SendBudget, SendBuffer
from tests.unit.test_sendbuffer import Transport


def client(budget: SendBudget, limit: int = 1000) -> tuple[SendBuffer, Transport]:
    transport = Transport()
    return SendBuffer(cast(asyncio.Transport, transport), limit, budget), transport


def test_only_backed_up_clients_count_and_they_stop_counting_when_drained_or_gone() -> None:
    budget = SendBudget(limit=10_000, page=100)
    send, transport = client(budget)
    transport.buffered = 50  # below the high-water mark: not backed up, not counted
    assert send.write(b"x" * 50)
    assert budget.held == 0
    transport.buffered = 400
    send.pause()  # the transport crossed its high-water mark
    assert budget.held == 400
    assert send.write(b"y" * 300)  # held back while paused
    assert budget.held == 700
    transport.buffered = 10
    send.resume()  # drained below the low-water mark; what was held went to the transport
    assert budget.held == 0
    transport.buffered = 500
    send.pause()
    send.release()  # the connection is gone
    assert budget.held == 0


def test_over_the_total_a_backed_up_client_is_refused_and_over_at_once() -> None:
    squeezes: list[None] = []
    budget = SendBudget(limit=500, page=100, on_squeeze=lambda: squeezes.append(None))
    hog, hog_transport = client(budget)
    hog_transport.buffered = 600
    hog.pause()
    assert budget.exhausted
    other, other_transport = client(budget)
    other_transport.buffered = 200
    other.pause()  # backed up, well within its own limit of 1000
    assert other.over
    assert not other.write(b"z" * 10)
    assert squeezes
    # A client that is not backed up may still take a page per write, not more.
    fresh, fresh_transport = client(budget)
    assert fresh.offer([b"a" * 60, b"b" * 40], 100) == 0
    assert fresh.offer([b"c" * 101], 101) == -1
    assert fresh_transport.calls == [[b"a" * 60, b"b" * 40]]
    # Once the hog is gone the node is under its total again: nothing is refused.
    hog.release()
    assert not budget.exhausted
    assert other.write(b"z" * 10)


def test_over_the_total_the_clients_backed_up_longest_are_shed_the_biggest_first() -> None:
    """Silent sockets that filled the total within their own limits used to stay while the next
    client that backed up for a moment was squeezed; now they are dropped, biggest first, until
    the node is within its total, and nobody else is squeezed."""
    sheds: list[None] = []
    now = [100.0]
    budget = SendBudget(
        limit=1000, page=100, on_shed=lambda: sheds.append(None), clock=lambda: now[0]
    )
    silent = []
    for size in (300, 450, 400):
        send, transport = client(budget)
        transport.buffered = size
        send.pause()
        silent.append((send, transport))
    assert budget.held == 1150  # over, but none has been backed up long enough to be shed
    assert budget.exhausted
    assert not any(transport.aborted for _, transport in silent)
    now[0] += SHED_AFTER_SECONDS
    reader, reader_transport = client(budget)
    reader_transport.buffered = 200
    reader.pause()  # a reader backed up for a moment: the biggest silent one goes
    assert [transport.aborted for _, transport in silent] == [False, True, False]
    assert len(sheds) == 1
    assert budget.held == 900
    assert not reader.over
    assert reader.write(b"r" * 10)
    # The one shed counts no more, whatever its transport says later, and takes nothing.
    shed, shed_transport = silent[1]
    shed.pause()
    assert budget.held == 910
    assert shed.offer([b"x"], 1) == 0
    assert shed_transport.calls == []
    shed.release()
    assert budget.held == 910
