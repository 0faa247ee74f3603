"""The ``bigroom`` scenario: a join storm of many clients into ONE room spread over the 3 nodes,
then the latency of a message to the room's last member.

Phases, each server in turn:

1. **anchors**: one member per node joins the room first (probed until each hears it), so every
   node serves the room before the storm and each anchor sees every join its node tells.
2. **storm**: ``bigroom_members`` new clients open and join at once (``bigroom_concurrency``
   handshakes in flight per worker), client *i* on node *i* mod 3. The storm is over when every
   anchor was told of every join: one ``user_joined`` each (the baseline, roomcast below its
   big-room threshold) or ``presence_changed`` counts (roomcast's big rooms). Measured: its time,
   the frames members received meanwhile (presence frames apart), CPU of nodes, nginx, Redis and
   the generator. Bounded by ``bigroom_deadline``: a server that has not told its members within
   it is reported as not settled, with how far it got.
3. **last member**: an anchor sends ``bigroom_messages`` messages one at a time, each once the
   previous reached every member; for each, the latency to the room's LAST member (the max over
   every member's receive time) is recorded; reported p50/p99/max over the messages. A message
   that has not reached every open member within ``LATENCY_WAIT_SECONDS`` is reported as
   incomplete, with how many it reached.

The workers' side is here too (``worker_op``): a frame tap counts what each anchor was told and
the per-message latencies, so the generic worker's hot path gains one callback check.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import orjson

from roomcast_bench.procstat import CpuWindow

if TYPE_CHECKING:
    from roomcast_bench.scenarios import Runner
    from roomcast_bench.systems import System
    from roomcast_bench.worker import Client, Worker

ROOM_PREFIX = "bigroom"
ROOM = f"{ROOM_PREFIX}-0"
FIRST_STORM_CID = 1000  # anchors are cids 0..nodes-1
USER_JOINED = b'{"type":"user_joined"'
PRESENCE_CHANGED = b'{"type":"presence_changed"'
MARK = b'"text":"b:'
POLL_SECONDS = 0.1
LATENCY_WAIT_SECONDS = 10.0  # a message not at every member by then is reported incomplete


# Coordinator side


def run(runner: Runner, system: System) -> dict[str, Any]:
    plan = runner.plan
    gen = runner.gen
    label = f"{system.name} bigroom"
    nodes = max(1, len(system.node_urls))
    from roomcast_bench.scenarios import RoomPlan

    anchors = RoomPlan(1, nodes, 1, "direct", ROOM_PREFIX, concurrency=10)
    runner.connect_rooms(system, anchors, label + " anchors")
    count = plan.bigroom_members
    try:
        gen.call(
            "bigroom_tap",
            [{"anchors": [c for c in range(nodes) if c % gen.size == w]} for w in range(gen.size)],
            timeout=30,
        )
        per_worker: list[list[dict[str, Any]]] = [[] for _ in range(gen.size)]
        for i in range(count):
            per_worker[i % gen.size].append(
                {"cid": FIRST_STORM_CID + i, "room": ROOM, "url": system.url_for("direct", i)}
            )
        window = CpuWindow(runner.cpu_groups(system)).start()
        started = time.monotonic()
        deadline = started + plan.bigroom_deadline
        replies = gen.call(
            "bigroom_storm",
            [{"clients": w, "concurrency": plan.bigroom_concurrency, "timeout": 30.0,
              "deadline": plan.bigroom_deadline} for w in per_worker],
            timeout=plan.bigroom_deadline + 120,
            show=lambda latest: _storm_line(label, latest, started),
        )  # fmt: skip
        failed = sum(r["failed"] for r in replies)
        unopened = sum(r["unopened"] for r in replies)
        joined = count - failed - unopened
        status = _until_told(runner, label, joined, started, deadline)
        # A refused join (an error frame: unavailable when the node could not finish it in
        # time) leaves an open client that is no member: it is told nothing and counts for none.
        joined -= status["errors"]
        storm_seconds = time.monotonic() - started
        cpu = window.stop()
        settled = not unopened and min(status["told"], default=0) >= joined
        dead = system.alive()
        if dead:
            # Imported here: the coordinator imports the worker, which imports this module.
            from roomcast_bench.coordinator import BenchError

            raise BenchError(f"{system.name}: {', '.join(dead)} exited during the storm")
        latency: dict[str, Any] = {"messages": 0, "complete": 0}
        if plan.bigroom_messages > 0:
            # Measured even after a storm that did not settle: then what a message costs while
            # the server still owes its members the storm's backlog.
            after = _status(runner)
            latency = _last_member_latency(runner, label, after["open"] - after["errors"])
    finally:
        runner.close()
    members = joined + nodes
    frames = status["frames"]
    presence_frames = status["presence_frames"]
    errors = [e for r in replies for e in r.get("errors", [])] + status["server_errors"]
    result: dict[str, Any] = {
        "scenario": "bigroom",
        "server": system.name,
        "via": "direct",
        "room_members": members,
        "storm_clients": count,
        "failed": failed,
        "unopened_at_deadline": unopened,
        "join_errors": status["errors"],
        "settled": settled,
        "deadline_seconds": plan.bigroom_deadline,
        "storm_seconds": round(storm_seconds, 3),
        "joins_per_s": joined / storm_seconds if storm_seconds else 0.0,
        "anchors_told_min": min(status["told"], default=0),
        "frames": frames,
        "frames_per_member": frames / members if members else None,
        "presence_frames": presence_frames,
        "presence_frames_per_member": presence_frames / members if members else None,
        "cpu_seconds": {k: round(v, 4) for k, v in cpu.items()},
        "cpu_us_per_join": {k: (v * 1e6 / joined if joined else None) for k, v in cpu.items()},
        "other_cores_busy": round(window.other / storm_seconds, 3) if storm_seconds else None,
        "last_member_latency_ms": latency,
    }
    if errors:
        result["errors"] = errors[:3]
    return result


def _storm_line(label: str, latest: list[dict[str, Any]], started: float) -> str:
    opened = sum(r.get("connected", 0) for r in latest)
    failed = sum(r.get("failed", 0) for r in latest)
    return f"{label}: {time.monotonic() - started:5.1f} s, {opened} joined, {failed} failed"


def _until_told(
    runner: Runner, label: str, joins: int, started: float, deadline: float
) -> dict[str, Any]:
    """Poll the anchors until each was told of ``joins`` joins (or the deadline passed)."""
    while True:
        status = _status(runner)
        told = status["told"]
        runner.progress.update(
            f"{label}: {time.monotonic() - started:5.1f} s, anchors told"
            f" {min(told, default=0):,}/{joins:,} joins, {status['frames']:,} frames"
        )
        if min(told, default=0) >= joins - status["errors"] or time.monotonic() > deadline:
            return status
        time.sleep(POLL_SECONDS)


def _status(runner: Runner) -> dict[str, Any]:
    replies = runner.gen.call("bigroom_status", timeout=60)
    latencies: dict[int, list[int]] = {}
    for reply in replies:
        for seq, (count, worst) in reply["latency"].items():
            entry = latencies.setdefault(int(seq), [0, 0])
            entry[0] += count
            entry[1] = max(entry[1], worst)
    return {
        "told": [t for r in replies for t in r["told"]],
        "open": sum(r["open"] for r in replies),
        "frames": sum(r["frames"] for r in replies),
        "presence_frames": sum(r["presence_frames"] for r in replies),
        "errors": sum(r["errors"] for r in replies),
        "server_errors": [e for r in replies for e in r.get("server_errors", [])],
        "latency": latencies,
    }


def _last_member_latency(runner: Runner, label: str, receivers: int) -> dict[str, Any]:
    """Each message alone: the next is sent once the previous reached every member (or
    ``LATENCY_WAIT_SECONDS`` passed), so a figure is one message's fan-out, not a queue."""
    plan = runner.plan
    worst: list[float] = []
    partial: list[int] = []
    for seq in range(plan.bigroom_messages):
        runner.gen.call("bigroom_mark", {"seq": seq}, timeout=60)
        started = time.monotonic()
        while True:
            count, latency_us = _status(runner)["latency"].get(seq, [0, 0])
            runner.progress.update(
                f"{label}: last-member latency, message {seq + 1}/{plan.bigroom_messages}:"
                f" {count:,}/{receivers:,} members"
            )
            if count >= receivers:
                worst.append(latency_us / 1000)
                break
            if time.monotonic() - started > LATENCY_WAIT_SECONDS:
                partial.append(count)
                break
            time.sleep(POLL_SECONDS / 2)
    worst.sort()
    result: dict[str, Any] = {
        "messages": plan.bigroom_messages,
        "complete": len(worst),
        "receivers": receivers,
        "p50": _pick(worst, 0.50),
        "p99": _pick(worst, 0.99),
        "max": worst[-1] if worst else None,
    }
    if partial:
        result["incomplete_received_by"] = partial  # members reached within the wait
    return result


def _pick(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def summary(entry: dict[str, Any]) -> str:
    lat = entry["last_member_latency_ms"]
    state = "settled" if entry["settled"] else f"NOT settled in {entry['deadline_seconds']:.0f} s"
    nodes = entry["cpu_seconds"].get("nodes")
    return (
        f"  {entry['server']} bigroom: {entry['room_members']:,} members, storm {state}"
        f" in {entry['storm_seconds']:.1f} s, {entry['presence_frames_per_member']:.1f} presence"
        f" frames/member, nodes {nodes or 0:.1f} s CPU; last member p50"
        f" {_num(lat.get('p50'))} ms p99 {_num(lat.get('p99'))} ms"
        f" ({lat.get('complete', 0)}/{lat.get('messages', 0)} messages reached everyone)"
    )


def markdown(result: dict[str, Any]) -> list[str]:
    entries = [e for e in result.get("scenarios", []) if e["scenario"] == "bigroom"]
    if not entries:
        return []
    lines = [
        "| bigroom | members | storm s | settled | presence frames/member | frames/member"
        " | nodes CPU s | nodes µs/join | last member p50 ms | p99 ms | max ms |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in entries:
        lat = e["last_member_latency_ms"]
        nodes_cpu = e["cpu_seconds"].get("nodes")
        per_join = e["cpu_us_per_join"].get("nodes")
        settled = "yes" if e["settled"] else f"no (told {e['anchors_told_min']:,})"
        lines.append(
            f"| {e['server']} | {e['room_members']:,} | {e['storm_seconds']:.1f} | {settled}"
            f" | {_num(e['presence_frames_per_member'])} | {_num(e['frames_per_member'])}"
            f" | {_num(nodes_cpu)} | {_num(per_join)}"
            f" | {_num(lat.get('p50'))} | {_num(lat.get('p99'))} | {_num(lat.get('max'))} |"
        )
    lines.append("")
    return lines


def _num(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


# Worker side


class StormTap:
    """Counts, in one worker, what its anchors were told and each mark message's latencies."""

    def __init__(self, anchors: list[int]) -> None:
        self.told = dict.fromkeys(anchors, 0)
        self.frames = 0
        self.presence_frames = 0
        self.errors = 0  # error frames: the storm's clients send only joins, so refused joins
        self.latency: dict[int, list[int]] = {}  # seq -> [receivers, worst µs]

    def __call__(self, client: Client, payload: bytes) -> bool:
        """True when the frame was one of the scenario's (the worker's usual handling skipped)."""
        self.frames += 1
        if payload.startswith(USER_JOINED):
            self.presence_frames += 1
            if client.cid in self.told:
                self.told[client.cid] += 1
            return True
        if payload.startswith(PRESENCE_CHANGED):
            self.presence_frames += 1
            if client.cid in self.told:
                self.told[client.cid] += int(orjson.loads(payload)["joined"])
            return True
        at = payload.find(MARK)
        if at < 0:
            if payload.startswith(b'{"type":"error"'):
                self.errors += 1  # and the worker keeps the first few
            return False
        now = time.time_ns()
        start = at + len(MARK)
        seq, sent = payload[start : payload.find(b'"', start)].split(b":")
        entry = self.latency.setdefault(int(seq), [0, 0])
        entry[0] += 1
        entry[1] = max(entry[1], (now - int(sent)) // 1000)
        return True


async def worker_op(worker: Worker, command: dict[str, Any]) -> dict[str, Any]:
    op = command["op"]
    if op == "bigroom_tap":
        worker.tap = StormTap(command["anchors"])
        return {}
    tap = worker.tap
    if not isinstance(tap, StormTap):
        raise ValueError(f"{op} before bigroom_tap")
    if op == "bigroom_storm":
        return await _storm(
            worker, command["clients"], command["concurrency"], command["timeout"],
            command["deadline"],
        )  # fmt: skip
    if op == "bigroom_status":
        return {
            "told": list(tap.told.values()),
            "open": sum(c.connected and not c.closed for c in worker.clients),
            "frames": tap.frames,
            "presence_frames": tap.presence_frames,
            "errors": tap.errors,
            "server_errors": worker.errors[-3:],
            "latency": {str(seq): entry for seq, entry in tap.latency.items()},
        }
    if op == "bigroom_mark":
        publishers = [c for c in worker.publishers if not c.closed]
        for client in publishers:
            client.message(f"b:{command['seq']}:{time.time_ns()}")
        return {"sent": len(publishers)}
    raise ValueError(f"unknown op {op!r}")


async def _storm(
    worker: Worker,
    specs: list[dict[str, Any]],
    concurrency: int,
    timeout: float,
    deadline: float,
) -> dict[str, Any]:
    """Open and join every client at once (``concurrency`` handshakes in flight); what is not
    open after ``deadline`` seconds is given up (``unopened``)."""
    from roomcast_bench.worker import Client

    new = [Client(worker, spec) for spec in specs]
    worker.clients.extend(new)
    gate = asyncio.Semaphore(concurrency)
    failed = 0

    async def one(client: Client) -> None:
        nonlocal failed
        async with gate:
            try:
                await worker.open(client, timeout)
            except Exception as exc:
                failed += 1
                if len(worker.errors) < 5:
                    worker.errors.append(f"storm {client.url}: {type(exc).__name__}: {exc}")
                return
            client.join()

    storm = asyncio.ensure_future(asyncio.gather(*(one(c) for c in new)))
    end = time.monotonic() + deadline
    while not storm.done():
        left = end - time.monotonic()
        if left <= 0:
            storm.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await storm
            break
        await asyncio.wait({storm}, timeout=min(0.5, left))
        connected = sum(c.connected for c in new)
        worker.pipe.send({"progress": True, "connected": connected, "failed": failed})
    unopened = sum(not c.connected for c in new) - failed
    return {"failed": failed, "unopened": unopened, "errors": worker.errors[-5:]}
