"""One chaos run: start the cluster, start the clients, play the seeded schedule under traffic,
let everyone catch up, look at presence, stop everything, judge."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tests.chaos import schedule
from tests.chaos.checker import Verdict, check
from tests.chaos.clients import ChaosClient, stop_clients
from tests.chaos.cluster import PRESENCE_TTL_SECONDS, ChaosCluster, Topology
from tests.chaos.devtools import timeout_factor
from tests.chaos.faults import FAULTS_BY_TOPOLOGY, INJECTORS, FaultContext, FaultRecord
from tests.chaos.presence import PresenceResult, convergence

Progress = Callable[[str], None]


@dataclass(frozen=True)
class RunConfig:
    seed: int
    duration: float  # seconds of faults under traffic (after the warm-up)
    topology: Topology = "standalone"
    kinds: tuple[str, ...] = ()  # empty: every kind the topology supports
    rooms: int = 3
    readers_per_room: int = 3
    senders_per_room: int = 2
    send_interval: float = 0.2  # seconds between one sender's messages (jittered ±50 %)
    warmup: float = 2.0  # seconds of plain traffic before the first fault
    settle: float = 15.0  # at most this long (scaled) for every member to catch up at the end
    max_faults: int = 0  # stop after this many faults even before the deadline (0: no limit)

    def fault_kinds(self) -> tuple[str, ...]:
        supported = FAULTS_BY_TOPOLOGY[self.topology]
        if not self.kinds:
            return supported
        unknown = [kind for kind in self.kinds if kind not in supported]
        if unknown:
            raise ValueError(f"not for {self.topology}: {unknown} (supported: {supported})")
        return self.kinds


@dataclass
class RunResult:
    config: RunConfig
    verdict: Verdict
    faults: list[FaultRecord]
    clients: list[ChaosClient]
    presence: PresenceResult
    caught_up: bool
    wall_seconds: float
    timeline_start: float
    diagnostics: dict[str, object] = field(default_factory=dict)


def make_clients(config: RunConfig, url: str) -> list[ChaosClient]:
    clients = []
    for r in range(config.rooms):
        room = f"room-{r}"
        for s in range(config.senders_per_room):
            name = f"r{r}-sender{s}"
            rng = random.Random(f"{config.seed}:{name}")
            clients.append(ChaosClient(name, room, url, rng, config.send_interval))
        for i in range(config.readers_per_room):
            name = f"r{r}-reader{i}"
            clients.append(ChaosClient(name, room, url, random.Random(f"{config.seed}:{name}")))
    return clients


def _latest_positions(clients: Sequence[ChaosClient]) -> dict[str, tuple[str, int]]:
    """Per room, the newest (epoch, offset) anyone saw (acked or delivered)."""
    newest: dict[str, tuple[float, str, int]] = {}
    for client in clients:
        for entry in client.log.entries:
            event = entry.event
            epoch, offset = event.get("epoch"), event.get("offset")
            if entry.direction != "in" or event.get("type") not in ("ack", "message"):
                continue
            if not isinstance(epoch, str) or not isinstance(offset, int):
                continue
            room = str(event.get("room", client.room))
            seen = newest.get(room)
            if (
                seen is None
                or (epoch == seen[1] and offset > seen[2])
                or (epoch != seen[1] and entry.t > seen[0])
            ):
                newest[room] = (entry.t, epoch, offset)
    return {room: (epoch, offset) for room, (_, epoch, offset) in newest.items()}


async def _await_caught_up(clients: Sequence[ChaosClient], timeout: float) -> bool:
    """Every member joined and at its room's newest position (polled: the condition spans all
    clients' state; each poll is cheap and the wait is bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        latest = _latest_positions(clients)
        if all(c.joined.is_set() and c.cursor == latest.get(c.room, c.cursor) for c in clients):
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)


async def run(config: RunConfig, progress: Progress = print) -> RunResult:
    kinds = config.fault_kinds()
    began = time.monotonic()
    progress(f"chaos seed={config.seed} topology={config.topology} duration={config.duration}s")
    progress(f"  faults: {', '.join(kinds)}")
    cluster = await asyncio.to_thread(ChaosCluster(config.topology).start)
    clients = make_clients(config, cluster.url)
    tasks = [asyncio.create_task(client.run()) for client in clients]
    faults: list[FaultRecord] = []
    diagnostics: dict[str, object] = {}
    try:
        async with asyncio.timeout(30 * timeout_factor()):
            await asyncio.gather(*(client.joined.wait() for client in clients))
        progress(f"  {len(clients)} clients joined {config.rooms} rooms through nginx")
        await asyncio.sleep(config.warmup)  # plain traffic: a baseline before any fault
        ctx = FaultContext(cluster, clients, [f"room-{r}" for r in range(config.rooms)],
                           random.Random(config.seed))  # fmt: skip
        deadline = time.monotonic() + config.duration
        for step, pause in schedule.steps(config.seed, kinds):
            if time.monotonic() >= deadline or len(faults) == config.max_faults > 0:
                break
            record = await INJECTORS[step.kind](ctx, step)
            faults.append(record)
            progress(
                f"  t+{record.started - began:6.1f}s {record.kind:<26} {record.target:<10} "
                f"{step.variant:<8} {record.ended - record.started:5.1f}s"
            )
            await asyncio.sleep(pause)
        for client in clients:
            client.sending = False
        caught_up = await _await_caught_up(clients, config.settle * timeout_factor())
        progress(f"  senders stopped; every member caught up: {caught_up}")
        last_fault_end = max((f.ended for f in faults), default=time.monotonic())
        bound = PRESENCE_TTL_SECONDS * 4 / 3
        presence = await convergence(
            # The nodes' own public ports: nginx's availability is judged by the reconnect
            # times; this judges what presence says.
            [f"http://127.0.0.1:{slot.process.port}" for slot in cluster.slots],
            lambda: {
                room: {c.name for c in clients if c.room == room and c.joined.is_set()}
                for room in ctx.rooms
            },
            since=last_fault_end,
            bound=bound * timeout_factor() + 1.0,  # + 1 s: the API's answer travels too
            give_up_after=3 * bound * timeout_factor() + 5.0,
        )
        if not caught_up or not presence.ok:
            diagnostics = await asyncio.to_thread(cluster.diagnostics)
            latest = _latest_positions(clients)
            diagnostics["clients"] = {
                c.name: {
                    "node": c.node,
                    "joined": c.joined.is_set(),
                    "cursor": c.cursor,
                    "room_latest": latest.get(c.room),
                }
                for c in clients
                if not c.joined.is_set() or c.cursor != latest.get(c.room)
            }
    finally:
        await stop_clients(clients, tasks)
        await asyncio.to_thread(cluster.stop)
    verdict = check(client.log for client in clients)
    return RunResult(
        config,
        verdict,
        faults,
        clients,
        presence,
        caught_up,
        time.monotonic() - began,
        began,
        diagnostics,
    )
