"""The node-wide heartbeat visits each connection once per interval, a slice per tick."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

from roomcast.net.heartbeat import MAX_SLICES, MIN_TICK_SECONDS, Heartbeat


@dataclass(eq=False)
class Conn:
    id: str


def make(interval: float, visits: list[Conn]) -> Heartbeat[Conn]:
    return Heartbeat(asyncio.get_running_loop(), interval, visits.append)


async def test_every_connection_once_per_interval_spread_over_the_ticks() -> None:
    visits: list[Conn] = []
    beat = make(30.0, visits)
    assert beat.slices == MAX_SLICES
    assert beat.tick == 30.0 / MAX_SLICES
    conns = [Conn(f"node-abc-{i:x}") for i in range(20_000)]
    for conn in conns:
        beat.add(conn)
    per_tick = []
    for _ in range(beat.slices):
        before = len(visits)
        beat._fire()
        per_tick.append(len(visits) - before)
    beat.stop()
    assert Counter(visits) == Counter(conns)  # each exactly once in one interval
    # Spread: no tick carries much more than its share (20,000 / 256 = 78 on average).
    assert max(per_tick) < 2 * len(conns) / beat.slices
    # The next interval visits them again, in the same ticks.
    first_round = list(visits)
    visits.clear()
    for _ in range(beat.slices):
        beat._fire()
    beat.stop()
    assert visits == first_round


async def test_removed_connection_is_not_visited_and_a_visit_may_remove() -> None:
    visits: list[Conn] = []
    beat = make(1.0, visits)
    gone, stays = Conn("a-1"), Conn("a-2")
    beat.add(gone)
    beat.add(stays)
    beat.discard(gone)
    beat.discard(Conn("never-added"))  # harmless

    def visit_and_close(conn: Conn) -> None:
        visits.append(conn)
        beat.discard(conn)  # what aborting a dead connection does

    beat._visit = visit_and_close
    for _ in range(beat.slices):
        beat._fire()
    assert visits == [stays]
    for _ in range(beat.slices):
        beat._fire()
    beat.stop()
    assert visits == [stays]


async def test_short_interval_gets_fewer_slices_and_the_timer_runs() -> None:
    visits: list[Conn] = []
    interval = 0.3
    beat = make(interval, visits)
    assert beat.slices == int(interval / MIN_TICK_SECONDS)
    conns = [Conn(f"n-{i}") for i in range(30)]
    for conn in conns:
        beat.add(conn)
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def watch(conn: Conn) -> None:
        visits.append(conn)
        if len(visits) == 2 * len(conns) and not done.done():
            done.set_result(loop.time())

    beat._visit = watch
    started = loop.time()
    beat.start()
    try:
        finished = await asyncio.wait_for(done, 10 * interval)
    finally:
        beat.stop()
    assert Counter(visits) == Counter({conn: 2 for conn in conns})
    # Two intervals' visits take about two intervals (the last bucket is visited at 2 x interval).
    assert finished - started >= 2 * interval - beat.tick
