"""SendBudget: what the node holds for backed-up clients, over all of them, and the shedding
over it (ROOMCAST_SEND_BUFFER_TOTAL_BYTES)."""

from __future__ import annotations

import asyncio
from typing import cast

from roomcast.net.sendbuffer import (
    CHURN_MEMORY_SECONDS,
    SHED_AFTER_SECONDS,
    SendBudget,
    SendBuffer,
)
from tests.unit.test_sendbuffer import Transport


def client(budget: SendBudget, limit: int = 1000, owner: str = "") -> tuple[SendBuffer, Transport]:
    transport = Transport()
    return SendBuffer(cast(asyncio.Transport, transport), limit, budget, owner), transport


def backed_up(budget: SendBudget, size: int, owner: str) -> tuple[SendBuffer, Transport]:
    """A client of ``owner`` whose transport just crossed its high-water mark with ``size``."""
    send, transport = client(budget, owner=owner)
    transport.buffered = size
    send.pause()
    return send, transport


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


PHONE, ATTACKER = "198.51.100.7", "203.0.113.9"


def test_sockets_replaced_before_they_are_due_count_from_the_first_of_their_address() -> None:
    """An address that closes its backed-up sockets before they are SHED_AFTER_SECONDS old and
    opens others kept the total full with sockets never due, and the reader backed up longest
    (a phone out of coverage) was the only one due: it was shed. Its address's replacements
    now count from the first socket it let go backed up, and it holds the most: it goes."""
    sheds: list[None] = []
    now = [100.0]
    budget = SendBudget(
        limit=1000, page=100, on_shed=lambda: sheds.append(None), clock=lambda: now[0]
    )
    phone, phone_transport = backed_up(budget, 300, PHONE)
    live = [backed_up(budget, 400, ATTACKER) for _ in range(2)]
    for _ in range(3):
        now[0] += 0.6  # each round is replaced before it has been backed up a second
        for send, _transport in live:
            send.release()  # the attacker closes them
        live = [backed_up(budget, 400, ATTACKER) for _ in range(2)]
    assert now[0] - 100.0 > SHED_AFTER_SECONDS
    # Once the first round's start is a second old, each round loses one socket for the total.
    assert not phone_transport.aborted
    assert sorted(transport.aborted for _, transport in live) == [False, True]
    assert len(sheds) == 2
    assert budget.held == 700
    assert not phone.over


def test_the_address_that_holds_the_most_is_shed_first_not_the_biggest_socket() -> None:
    """Sockets smaller than a reader's backlog (more of them) made the reader the biggest."""
    now = [100.0]
    budget = SendBudget(limit=1000, page=100, clock=lambda: now[0])
    phone, phone_transport = backed_up(budget, 500, PHONE)
    small = [backed_up(budget, 300, ATTACKER) for _ in range(2)]
    now[0] += SHED_AFTER_SECONDS
    assert budget.exhausted is False  # 1100 held: one 300 of the attacker's goes
    assert not phone_transport.aborted
    assert sorted(transport.aborted for _, transport in small) == [False, True]
    assert not phone.over


def test_a_reader_that_drained_is_not_remembered_and_memory_expires() -> None:
    """Only a connection that went away backed up marks its address: a reader that drained
    starts afresh when it backs up again. What is remembered is forgotten after
    CHURN_MEMORY_SECONDS, so the budget's records are bounded by what is backed up now."""
    now = [100.0]
    budget = SendBudget(limit=1000, page=100, clock=lambda: now[0])
    reader, reader_transport = backed_up(budget, 300, PHONE)
    now[0] += 0.5
    reader_transport.buffered = 10
    reader.resume()  # it read
    assert budget.owners == 0
    _silent, silent_transport = backed_up(budget, 500, ATTACKER)
    now[0] += 0.6
    reader_transport.buffered = 600
    reader.pause()  # backed up again: since now, not since its first backlog
    now[0] += 0.5  # the silent one is due (1.1 s), the reader is not (0.5 s)
    assert not budget.exhausted
    assert silent_transport.aborted and not reader_transport.aborted
    assert budget.owners == 2  # the reader's, backed up; the attacker's, remembered
    reader_transport.buffered = 10
    reader.resume()
    assert budget.owners == 1
    # Many addresses that went away backed up are forgotten CHURN_MEMORY_SECONDS later.
    for index in range(50):
        send, _transport = backed_up(budget, 10, f"192.0.2.{index}")
        send.release()
    assert budget.owners == 51
    now[0] += CHURN_MEMORY_SECONDS
    later, _transport = backed_up(budget, 10, PHONE)
    assert budget.owners == 1
    later.release()
    assert budget.owners == 1  # remembered: it went away backed up
    assert budget.held == 0


def test_a_connection_that_learns_its_address_counts_for_it() -> None:
    """Behind a proxy the address is known at the handshake (or per HTTP request): what the
    socket holds then moves to that owner."""
    budget = SendBudget(limit=10_000, page=100)
    send, transport = client(budget, owner="127.0.0.1")
    transport.buffered = 400
    send.pause()
    send.belongs_to(ATTACKER)
    assert send.owner == ATTACKER and send.holder is not None
    assert send.holder.held == 400 and budget.held == 400
    assert budget.owners == 1  # the proxy's entry went with it (it never went away backed up)
    send.release()
    assert budget.held == 0
