"""The budget of handshakes per loop turn (net.setup_turns): first reads past it wait for later
turns, in order, reading paused, and the loop runs other callbacks between them."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from typing import cast

import pytest

from roomcast.net.setup_turns import SETUP_BUDGET_PER_TURN, SetupTurns
from tests.support.wsharness import FakeTransport, RecordingApp, make_server, settle

HEAD = (
    b"GET /chat HTTP/1.1\r\nHost: testserver\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Setup:
    """A new connection whose handshake costs ``cost`` seconds of the fake clock."""

    def __init__(self, name: str, clock: FakeClock, log: list[str], cost: float) -> None:
        self.name = name
        self.clock = clock
        self.log = log
        self.cost = cost
        self.paused = False
        self.waited: bool | None = None

    def pause_for_turn(self) -> None:
        self.paused = True

    def take_turn(self, data: bytes, waited: bool) -> None:
        assert data == self.name.encode()
        self.waited = waited
        self.clock.now += self.cost
        self.log.append(self.name)


async def test_first_reads_within_the_budget_run_at_once() -> None:
    clock, log = FakeClock(), list[str]()
    turns = SetupTurns(asyncio.get_running_loop(), budget=0.005, clock=clock)
    setups = [Setup(f"s{i}", clock, log, cost=0.001) for i in range(4)]
    for setup in setups:
        turns.first_read(setup, setup.name.encode())
    assert log == ["s0", "s1", "s2", "s3"]
    assert not any(setup.paused for setup in setups)
    assert all(setup.waited is False for setup in setups)


async def test_first_reads_past_the_budget_wait_for_later_turns_in_order() -> None:
    loop = asyncio.get_running_loop()
    clock, log = FakeClock(), list[str]()
    turns = SetupTurns(loop, budget=0.005, clock=clock)
    setups = [Setup(f"s{i}", clock, log, cost=0.002) for i in range(10)]
    for setup in setups:  # as the sockets read together in one turn
        turns.first_read(setup, setup.name.encode())
    # 0.002 + 0.002 + 0.002 passes 0.005: the fourth and later wait, reading paused.
    assert log == ["s0", "s1", "s2"]
    assert [setup.paused for setup in setups] == [False] * 3 + [True] * 7
    assert turns.waiting == 7
    # Another connection's read, arriving meanwhile (a callback of the next turn), is not
    # kept waiting behind all seven: it runs after the next turn's three at most.
    loop.call_soon(log.append, "bystander")
    await settle()
    assert turns.waiting == 0
    assert log == ["s0", "s1", "s2", "s3", "s4", "s5", "bystander", "s6", "s7", "s8", "s9"]
    assert all(setup.waited for setup in setups[3:])


async def test_a_first_read_waits_behind_those_already_waiting() -> None:
    loop = asyncio.get_running_loop()
    clock, log = FakeClock(), list[str]()
    turns = SetupTurns(loop, budget=0.005, clock=clock)
    heavy = [Setup(f"h{i}", clock, log, cost=0.005) for i in range(2)]
    for setup in heavy:
        turns.first_read(setup, setup.name.encode())
    assert log == ["h0"]
    light = Setup("l", clock, log, cost=0.0)
    await asyncio.sleep(0)  # the next turn: h1 spends its budget
    assert log == ["h0", "h1"]
    turns.first_read(light, b"l")  # over the budget in this turn: waits for the next
    assert light.paused
    await settle()
    assert turns.waiting == 0
    assert log == ["h0", "h1", "l"]


# Through a Connection: a waiting handshake reads nothing until its turn, then is answered and
# reads again (after a refusal too, so the rest is drained, not reset).


@pytest.mark.parametrize(
    ("path", "status"), [("/chat", b"101 Switching Protocols"), ("/elsewhere", b"404")]
)
async def test_a_handshake_past_the_budget_is_answered_in_a_later_turn(
    path: str, status: bytes
) -> None:
    server = make_server(RecordingApp(), setup_budget=0.0)  # every handshake waits a turn
    raw = FakeTransport()
    conn = server._new_connection()
    conn.connection_made(cast(asyncio.BaseTransport, raw))
    conn.data_received(HEAD.replace(b"/chat", path.encode()))
    assert raw.paused
    assert raw.take() == b""
    await settle()
    assert server.setup_turns.waiting == 0
    assert status in raw.take().split(b"\r\n", 1)[0]
    assert not raw.paused


async def test_a_connection_lost_while_waiting_is_not_answered() -> None:
    server = make_server(RecordingApp(), setup_budget=0.0)
    raw = FakeTransport()
    conn = server._new_connection()
    conn.connection_made(cast(asyncio.BaseTransport, raw))
    conn.data_received(HEAD)
    conn.connection_lost(None)
    await settle()
    assert server.setup_turns.waiting == 0
    assert raw.take() == b""
    assert not server.connections


# Real sockets: the longest loop turn while a burst of handshakes, all read at once, is set up.

BURST = 300
# The budget, plus the setup begun just under it and the turn's other callbacks (the burst's
# reads, queued); without the budget one turn took all 300 setups (57-71 ms of CPU here).
LONGEST_TURN = SETUP_BUDGET_PER_TURN + 0.010


@pytest.fixture
def clients() -> Iterator[list[socket.socket]]:
    made: list[socket.socket] = []
    yield made
    for sock in made:
        sock.close()


class TurnClock:
    """The loop's CPU in each turn until ``until()`` holds (thread time: the machine's other
    work does not stretch it)."""

    def __init__(self, until: Callable[[], bool]) -> None:
        self.loop = asyncio.get_running_loop()
        self.until = until
        self.turns: list[float] = []
        self.done = self.loop.create_future()
        self.last = time.thread_time()
        self.loop.call_soon(self.tick)

    def tick(self) -> None:
        now = time.thread_time()
        self.turns.append(now - self.last)
        self.last = now
        if self.until():
            self.done.set_result(None)
        else:
            self.loop.call_soon(self.tick)

    async def wait(self) -> float:
        await asyncio.wait_for(self.done, timeout=30)
        return max(self.turns)


async def test_a_burst_of_handshakes_read_together_is_set_up_over_many_short_turns(
    clients: list[socket.socket],
) -> None:
    server = make_server(RecordingApp(), setup_budget=SETUP_BUDGET_PER_TURN)
    port = await server.start("127.0.0.1", 0)
    try:
        for _ in range(BURST):
            clients.append(socket.create_connection(("127.0.0.1", port)))
        accepting = TurnClock(lambda: server.accepted == BURST)
        accept_turn = await accepting.wait()
        # Sent before the loop runs again: the server reads all the heads in one turn.
        for sock in clients:
            sock.sendall(HEAD)
        setting_up = TurnClock(lambda: len(server.connections) == BURST)
        longest = await setting_up.wait()
    finally:
        await server.drain(1.0)
    print(
        f"{BURST} accepted, longest turn {accept_turn * 1000:.1f} ms of CPU; set up in "
        f"{len(setting_up.turns)} turns, longest {longest * 1000:.1f} ms"
    )
    assert longest < LONGEST_TURN, f"longest turn {longest * 1000:.1f} ms"
