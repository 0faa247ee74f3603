"""The ``storm`` scenario: many clients over 3 nodes through nginx, one node SIGKILLed.

Every client of the killed node comes back through nginx to the two others the way the real
clients do (roomcast.client): a full-jitter delay first (uniform up to 0.5 s, doubling per failed
attempt up to 30 s), and after a busy node's ``503`` at least its ``Retry-After`` on top. A
roomcast client rejoins with ``since`` (its last offset), and its ``joined`` frame says whether
it recovered. Measured, from the SIGKILL on:

- the time until every client of the killed node is connected again, and (roomcast) has
  resumed: its rejoin's ``joined`` arrived;
- zero loss, by offset: every client must see each offset of its room exactly once and in order
  (gaps, duplicates and a tail it never got are counted), before and across the reconnect;
- the fan-out latency of the clients that were never disconnected (the untouched ones), during
  the storm and before it;
- the CPU of the surviving nodes, nginx and Redis during the storm, and the admission refusals
  (the nodes' ``roomcast_handshakes_rejected_total{status="503"}`` and what clients saw).

The storm runs on a cluster of its own (a node is killed), with the nodes' default admission
settings, and nginx with enough workers for twice the clients' file descriptors (each worker
holds < 20,000 here). The baseline has nothing to resume: only its reconnect time is measured.

The coordinator side is :func:`run`; the load-generator side is :class:`StormWorker`, reached
through ``Worker.dispatch`` for the ``storm_*`` commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import signal
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from roomcast_bench.coordinator import Generator
    from roomcast_bench.scenarios import Runner
    from roomcast_bench.systems import System
    from roomcast_bench.worker import Worker

# Reconnect delays of the real clients (roomcast.client.backoff.Backoff's defaults).
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
# Each generator process holds < 20,000 sockets (RLIMIT_NOFILE); 5,000 clients each also keeps
# one event loop's share of reconnects and deliveries small on a busy machine.
CLIENTS_PER_WORKER = 5_000
# How long, after publishing stopped, every client may take to reach its room's last offset.
TAIL_GRACE = 120.0
# nginx holds two sockets per client (client + node); workers share them unevenly by a little.
NGINX_SOCKETS_PER_WORKER = 12_000
HANDSHAKE_TIMEOUT = 15.0
SAMPLE_CAP_US = 2**32 - 1


def backoff_delay(attempt: int, rng: random.Random) -> float:
    """Full jitter under an exponential bound, as roomcast.client.backoff.Backoff.delay."""
    if attempt < 1:
        return 0.0
    return rng.uniform(0.0, min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** min(attempt - 1, 60)))


def retry_after(headers: Any) -> float:
    value = headers.get("Retry-After") if headers is not None else None
    return float(int(value)) if isinstance(value, str) and value.strip().isdigit() else 0.0


# ---------------------------------------------------------------------------------------------
# Load-generator side


class StormClient:
    """One chat client of the storm: its room position and its reconnect history."""

    __slots__ = (
        "attempts",
        "cid",
        "disconnected_at",
        "disconnects",
        "dups",
        "epoch",
        "gaps",
        "joined",
        "last",
        "live",
        "opened_at",
        "publisher",
        "reason",
        "recovered",
        "refusals",
        "resumed_at",
        "room",
        "room_bytes",
        "source",
        "transport",
        "username",
    )

    def __init__(self, spec: dict[str, Any], source: str) -> None:
        self.cid: int = spec["cid"]
        self.room: str = spec["room"]
        self.room_bytes = self.room.encode()
        self.publisher: bool = spec["publisher"]
        self.username = f"s{self.cid}"
        self.source = source
        self.transport: Any = None
        self.live = False  # open and joined: may publish
        self.joined = False  # the first join's answer came
        self.epoch: str | None = None
        self.last = 0  # the last offset seen, in order
        self.gaps = 0  # offsets skipped
        self.dups = 0  # offsets seen again (or out of order)
        self.disconnected_at: float | None = None  # the first loss of the connection (storm)
        self.disconnects = 0
        self.opened_at: float | None = None  # the last successful handshake
        self.resumed_at: float | None = None  # the rejoin's joined frame after the storm
        self.recovered: bool | None = None
        self.reason: str | None = None
        self.attempts = 0
        self.refusals = 0


def _listener_class(storm: StormWorker, picows: Any) -> Any:
    """One picows listener class per worker; each instance knows its client's index."""

    class Listener(picows.WSListener):  # type: ignore[misc,name-defined,unused-ignore]
        __slots__ = ("index", "up")

        def __init__(self, index: int) -> None:
            self.index = index
            self.up = False

        def on_ws_connected(self, transport: Any) -> None:
            self.up = True
            storm.on_connected(self.index, transport)

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type is picows.WSMsgType.TEXT:
                storm.on_frame(self.index, frame.get_payload_as_bytes())
            elif frame.msg_type is picows.WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

        def on_ws_disconnected(self, transport: Any) -> None:
            if self.up:
                self.up = False
                storm.on_disconnect(self.index)

    return Listener


class StormWorker:
    """The storm's clients in one load-generator process (picows on uvloop)."""

    def __init__(self, worker: Worker) -> None:
        import picows

        self.picows = picows
        self.worker = worker
        self.url = ""
        self.resume = True  # roomcast: rejoin with since; the baseline: plain join
        self.clients: list[StormClient] = []
        self.rng = random.Random(os.getpid())
        self.armed = False  # after the initial connect: disconnects are the storm's
        self.stopping = False
        self.tasks: set[asyncio.Task[Any]] = set()
        self.publisher: asyncio.Task[None] | None = None
        self.sent = 0
        self.received = 0
        self.skipped = 0  # sends skipped while the publisher was reconnecting
        self.last_rx = 0.0
        self.errors: list[str] = []
        self.server_errors = 0
        self.other_epochs = 0
        self.connect_failures = 0
        self.join_retries = 0
        # (receive time, latency µs, client index) of every measured delivery
        self.rx_at = array("d")
        self.rx_us = array("I")
        self.rx_who = array("I")
        self.listener = _listener_class(self, picows)
        self.joined_count = 0
        self.all_joined = asyncio.Event()

    # Frames

    def on_frame(self, index: int, payload: bytes) -> None:
        client = self.clients[index]
        try:
            frame = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        kind = frame.get("type")
        if kind == "message":
            now = time.monotonic()
            self.received += 1
            self.last_rx = now
            text = frame.get("text", "")
            if isinstance(text, str) and text.startswith("s:"):
                sent = int(text[2:])
                self.rx_at.append(now)
                self.rx_us.append(min(SAMPLE_CAP_US, max(0, (time.time_ns() - sent) // 1000)))
                self.rx_who.append(index)
            offset = frame.get("offset")
            if isinstance(offset, int):
                self._offset(client, offset, frame.get("epoch"))
        elif kind == "joined":
            self._joined(client, frame)
        elif kind == "error":
            if frame.get("code") == "unavailable" and frame.get("room") == client.room:
                # A join the broker did not confirm in time: asked again, as a person would.
                self.join_retries += 1
                self._spawn(self._rejoin(client))
                return
            self.server_errors += 1
            if len(self.errors) < 5:
                self.errors.append(payload[:200].decode(errors="replace"))

    def _offset(self, client: StormClient, offset: int, epoch: Any) -> None:
        if epoch != client.epoch:
            self.other_epochs += 1
            return
        if offset == client.last + 1:
            client.last = offset
        elif offset <= client.last:
            client.dups += 1
        else:
            client.gaps += offset - client.last - 1
            client.last = offset

    def _first_join(self, client: StormClient) -> None:
        if not client.joined:
            client.joined = True
            self.joined_count += 1
            if self.joined_count >= len(self.clients):
                self.all_joined.set()

    def _joined(self, client: StormClient, frame: dict[str, Any]) -> None:
        offset = frame.get("offset")
        epoch = frame.get("epoch")
        if not client.joined:
            self._first_join(client)
            client.epoch = epoch if isinstance(epoch, str) else None
            client.last = offset if isinstance(offset, int) else 0
        else:
            client.recovered = frame.get("recovered") is True
            client.reason = frame.get("reason")
            if not client.recovered and isinstance(offset, int):
                # Not resumed: what lies between is lost to this client (counted as a gap).
                client.gaps += max(0, offset - client.last)
                client.last = offset
                client.epoch = epoch if isinstance(epoch, str) else client.epoch
            if client.disconnected_at is not None:
                client.resumed_at = time.monotonic()
        client.live = True

    async def _rejoin(self, client: StormClient) -> None:
        await asyncio.sleep(1.0 + backoff_delay(1, self.rng))
        if client.transport is not None and not client.live:
            client.transport.send(self.picows.WSMsgType.TEXT, orjson.dumps(self._join(client)))

    def _join(self, client: StormClient) -> dict[str, Any]:
        join: dict[str, Any] = {"type": "join", "room": client.room, "username": client.username}
        if self.resume and client.joined and client.epoch is not None:
            join["since"] = {"offset": client.last, "epoch": client.epoch}
        return join

    def on_connected(self, index: int, transport: Any) -> None:
        self.clients[index].transport = transport

    def on_disconnect(self, index: int) -> None:
        client = self.clients[index]
        client.transport = None
        client.live = False
        if self.stopping:
            return
        client.disconnects += 1
        if self.armed and client.disconnected_at is None:
            client.disconnected_at = time.monotonic()
        self._spawn(self._reconnect(client, index))

    # Connecting

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _open(self, client: StormClient, index: int) -> float | None:
        """One handshake: None when open (and the join sent), else the server's Retry-After."""
        picows = self.picows
        client.attempts += 1
        listener = self.listener
        try:
            transport, _ = await picows.ws_connect(
                lambda: listener(index),
                self.url,
                websocket_handshake_timeout=HANDSHAKE_TIMEOUT,
                enable_auto_pong=True,
                local_addr=(client.source, 0),
            )
        except picows.WSHandshakeError as exc:
            response = exc.response
            if response is not None and int(response.status) == 503:
                client.refusals += 1
                return retry_after(response.headers)
            self._failed(client, exc)
            return 0.0
        except (TimeoutError, OSError, picows.WSError) as exc:
            self._failed(client, exc)
            return 0.0
        if client.transport is not transport:
            return None  # lost again at once: its reconnect is already under way
        client.opened_at = time.monotonic()
        transport.send(picows.WSMsgType.TEXT, orjson.dumps(self._join(client)))
        if not self.resume:
            self._first_join(client)  # the baseline answers no join: open is all there is
            client.live = True
        return None

    def _failed(self, client: StormClient, exc: BaseException) -> None:
        self.connect_failures += 1
        if len(self.errors) < 5:
            self.errors.append(f"connect {client.cid}: {type(exc).__name__}: {exc}")

    async def _connect(self, client: StormClient, index: int, attempt: int) -> None:
        """Attempts until open: each failure waits its Retry-After plus the jittered delay."""
        while not self.stopping:
            wait = await self._open(client, index)
            if wait is None:
                return
            attempt += 1
            await asyncio.sleep(wait + backoff_delay(attempt, self.rng))

    async def _reconnect(self, client: StormClient, index: int) -> None:
        # As roomcast.client does after a drop: the first attempt after a full-jitter delay.
        await asyncio.sleep(backoff_delay(1, self.rng))
        await self._connect(client, index, 1)

    async def connect(self, specs: list[dict[str, Any]], url: str, resume: bool,
                      concurrency: int) -> dict[str, Any]:  # fmt: skip
        from roomcast_bench.worker import source_address

        self.url, self.resume = url, resume
        first = len(self.clients)
        self.clients.extend(StormClient(spec, source_address(spec["cid"])) for spec in specs)
        gate = asyncio.Semaphore(concurrency)

        async def one(index: int) -> None:
            async with gate:
                await self._connect(self.clients[index], index, 0)

        started = time.monotonic()
        await self.worker._with_progress(
            asyncio.gather(*(one(i) for i in range(first, len(self.clients)))),
            self._counts,
        )
        # Every join answered (roomcast): the room's position is known before the clock starts.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_joined.wait(), 60)
        return {**self._counts(), "seconds": time.monotonic() - started,
                "errors": self.errors[-5:]}  # fmt: skip

    # Publishing and the storm

    def start(self, rate: float) -> dict[str, Any]:
        """Publishers send ``rate`` messages/s in all; every later disconnect is the storm's."""
        self.armed = True
        self.publisher = asyncio.ensure_future(self._publish(rate))
        return self._counts()

    async def _publish(self, rate: float) -> None:
        pubs = [c for c in self.clients if c.publisher]
        if not pubs or rate <= 0:
            return
        text = self.picows.WSMsgType.TEXT
        loop = asyncio.get_running_loop()
        start = loop.time()
        due_total = 0
        index = 0
        while not self.stopping:
            due = int((loop.time() - start) * rate) - due_total
            if due > rate:  # this process was starved: no burst to catch up, a second at most
                due_total += due - int(rate)
                due = int(rate)
            for _ in range(max(0, due)):
                due_total += 1
                client = pubs[index % len(pubs)]
                index += 1
                if not client.live or client.transport is None:
                    self.skipped += 1
                    continue
                client.transport.send(
                    text,
                    b'{"type":"message","room":"'
                    + client.room_bytes
                    + b'","text":"s:'
                    + str(time.time_ns()).encode()
                    + b'"}',
                )
                self.sent += 1
            await asyncio.sleep(min(0.01, max(0.001, 1.0 / rate)))

    def _counts(self) -> dict[str, Any]:
        touched = [c for c in self.clients if c.disconnected_at is not None]
        return {
            "clients": len(self.clients),
            "joined": sum(c.joined for c in self.clients),
            "open": sum(c.transport is not None for c in self.clients),
            "disconnected": len(touched),
            "reconnected": sum(
                c.opened_at is not None and c.opened_at >= (c.disconnected_at or 0.0)
                and c.transport is not None for c in touched
            ),
            "resumed": sum(c.resumed_at is not None and c.live for c in touched),
            "refusals": sum(c.refusals for c in self.clients),
            "sent": self.sent,
            "received": self.received,
        }  # fmt: skip

    def status(self) -> dict[str, Any]:
        return self._counts()

    async def quiesce(self, quiet: float, grace: float) -> dict[str, Any]:
        """Stop publishing and let traffic settle; the last offset seen of each room here."""
        if self.publisher is not None:
            self.publisher.cancel()
        ended = time.monotonic()
        self.last_rx = max(self.last_rx, ended)
        for _ in range(max(1, int(grace / 0.02))):
            if time.monotonic() - self.last_rx >= quiet:
                break  # the last message arrived a quiet period ago
            await asyncio.sleep(0.02)
        last: dict[str, int] = {}
        for c in self.clients:
            last[c.room] = max(last.get(c.room, 0), c.last)
        return {"rooms_max": last}

    async def stop(self, windows: dict[str, list[float]], targets: dict[str, int],
                   grace: float) -> dict[str, Any]:  # fmt: skip
        """Wait (bounded) until every client reached its room's last offset over all workers
        (a message still on its way is late, not lost), report, and close every client."""
        for _ in range(max(1, int(grace / 0.5))):
            if all(c.last >= targets.get(c.room, 0) for c in self.clients if c.joined):
                break
            await asyncio.sleep(0.5)
        self.stopping = True
        touched = [(i, c) for i, c in enumerate(self.clients) if c.disconnected_at is not None]
        import numpy as np

        untouched = np.array([c.disconnected_at is None for c in self.clients], dtype=bool)
        at = np.frombuffer(self.rx_at, dtype=np.float64)
        micros = np.frombuffer(self.rx_us, dtype=np.uint32)
        who = np.frombuffer(self.rx_who, dtype=np.uint32)
        latencies = {}
        for name, (low, high) in windows.items():
            keep = (at >= low) & (at <= high) & untouched[who]
            latencies[name] = micros[keep].astype(np.uint32).tobytes()
        tail_missing = sum(
            max(0, targets.get(c.room, 0) - c.last) for c in self.clients if c.joined
        )

        def times(pick: Callable[[StormClient], float | None]) -> bytes:
            return array("d", [pick(c) or math.nan for _, c in touched]).tobytes()

        reasons: dict[str, int] = {}
        for _, c in touched:
            if c.recovered is False:
                reasons[str(c.reason)] = reasons.get(str(c.reason), 0) + 1
        result = {
            **self._counts(),
            "skipped": self.skipped,
            "disconnected_at": times(lambda c: c.disconnected_at),
            # Only a handshake after the loss counts: a client never back has none.
            "opened_at": times(
                lambda c: (
                    c.opened_at
                    if c.opened_at is not None and c.opened_at >= (c.disconnected_at or 0.0)
                    else None
                )
            ),
            "resumed_at": times(lambda c: c.resumed_at),
            "attempts": array("I", [c.attempts for _, c in touched]).tobytes(),
            "recovered": sum(c.recovered is True for _, c in touched),
            "not_recovered": reasons,
            "lost_connection_again": sum(c.disconnects > 1 for _, c in touched),
            "tail_missing": tail_missing,
            "gaps": sum(c.gaps for c in self.clients),
            "dups": sum(c.dups for c in self.clients),
            "clients_with_gaps_or_dups": sum(c.gaps > 0 or c.dups > 0 for c in self.clients),
            "other_epochs": self.other_epochs,
            "never_joined": sum(not c.joined for c in self.clients),
            "connect_failures": self.connect_failures,
            "join_retries": self.join_retries,
            "server_errors": self.server_errors,
            "latencies": latencies,
            "errors": self.errors[-5:],
        }
        for c in self.clients:
            if c.transport is not None:
                c.transport.disconnect(graceful=False)
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        return result

    async def dispatch(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command["op"]
        if op == "storm_connect":
            return await self.connect(
                command["clients"], command["url"], command["resume"], command["concurrency"]
            )
        if op == "storm_start":
            return self.start(command["rate"])
        if op == "storm_status":
            return self.status()
        if op == "storm_quiesce":
            return await self.quiesce(command["quiet"], command["grace"])
        if op == "storm_stop":
            return await self.stop(command["windows"], command["targets"], command["grace"])
        raise ValueError(f"unknown op {op!r}")


# ---------------------------------------------------------------------------------------------
# Coordinator side


def _storm_cluster(system: System, clients: int) -> System:
    """A fresh cluster like ``system``'s (one node gets killed), with the nodes' default
    admission and an nginx with enough workers for every client's two sockets."""
    from roomcast_dev.devcluster import ManagedProcess, find_binary, render_nginx_config

    from roomcast_bench.systems import start_system

    source = None
    if system.cluster is not None and "PYTHONPATH" in system.cluster.node_env:
        source = Path(system.cluster.node_env["PYTHONPATH"])
    fresh = start_system(system.name, roomcast_path=source, nginx=False, admission=True)
    cluster = fresh.cluster
    assert cluster is not None
    workers = max(2, math.ceil(2 * clients / NGINX_SOCKETS_PER_WORKER))
    cluster.nginx_port = cluster.nginx_port or _free_port()
    prefix = cluster.workdir / "nginx"
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    config = render_nginx_config(cluster.nginx_port, [n.port for n in cluster.nodes], prefix)
    # reuseport: the kernel spreads new connections evenly over the workers' own sockets.
    config = config.replace("worker_processes auto;", f"worker_processes {workers};").replace(
        f"listen 127.0.0.1:{cluster.nginx_port} ",
        f"listen 127.0.0.1:{cluster.nginx_port} reuseport ",
    )
    (prefix / "nginx.conf").write_text(config)
    binary = find_binary("nginx")
    cluster.nginx = ManagedProcess(
        "nginx", [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr"]
    )
    cluster.use_nginx = True
    cluster._await_http(f"{cluster.http_url}/healthz", cluster.nginx, 20)
    fresh.nginx_url = cluster.url
    fresh.refresh_pids()
    return fresh


def _free_port() -> int:
    from roomcast_dev.devcluster import free_port

    return free_port()


def _node_metrics(system: System) -> list[str]:
    """The /metrics text of every node still alive."""
    import urllib.request

    assert system.cluster is not None
    texts = []
    for node in system.cluster.nodes:
        if not node.process.alive():
            continue
        try:
            with urllib.request.urlopen(f"{node.metrics_url}/metrics", timeout=10) as response:
                texts.append(response.read().decode())
        except OSError:
            continue
    return texts


def _refused(system: System) -> float | None:
    """The surviving nodes' admission refusals (roomcast_handshakes_rejected_total 503)."""
    if system.name != "roomcast" or system.cluster is None:
        return None
    total = 0.0
    for text in _node_metrics(system):
        for line in text.splitlines():
            if line.startswith('roomcast_handshakes_rejected_total{status="503"}'):
                total += float(line.rsplit(" ", 1)[1])
    return total


def _fanout_buckets(system: System) -> dict[float, float]:
    """The surviving nodes' roomcast_fanout_latency_seconds buckets, summed (cumulative)."""
    if system.name != "roomcast" or system.cluster is None:
        return {}
    buckets: dict[float, float] = {}
    for text in _node_metrics(system):
        for line in text.splitlines():
            if line.startswith("roomcast_fanout_latency_seconds_bucket{"):
                le = line.split('le="', 1)[1].split('"', 1)[0]
                bound = math.inf if le == "+Inf" else float(le)
                buckets[bound] = buckets.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    return buckets


def node_fanout_p99_ms(before: dict[float, float], after: dict[float, float]) -> float | None:
    """The upper bound (ms) of the histogram bucket holding the 99th percentile of what the
    nodes observed between two scrapes: the servers' own share of the latency."""
    deltas = sorted((bound, after[bound] - before.get(bound, 0.0)) for bound in after)
    if not deltas or deltas[-1][1] <= 0:
        return None
    total = deltas[-1][1]
    for bound, count in deltas:
        if count >= 0.99 * total:
            return bound * 1000.0
    return None


def run(runner: Runner, system: System) -> dict[str, Any]:
    """The storm against a fresh copy of ``system``: connect, publish, SIGKILL, measure."""
    from roomcast_bench.coordinator import Generator

    clients = runner.plan.storm_clients
    runner.progress.update(f"{system.name} storm: starting its own cluster", force=True)
    storm_system = _storm_cluster(system, clients)
    gen: Generator | None = None
    try:
        workers = max(runner.gen.size, math.ceil(clients / CLIENTS_PER_WORKER))
        gen = Generator(workers, runner.gen.kind, runner.progress)
        storm = Storm(runner, storm_system, gen)
        storm.connect()
        storm.calm()
        storm.kill_and_wait()
        replies = storm.stop()
    finally:
        if gen is not None:
            gen.close()
        storm_system.stop()
    entry = storm.figures(replies)
    runner.progress.log(summary(entry))
    return entry


class Storm:
    """One storm's phases, run by the coordinator in order."""

    def __init__(self, runner: Runner, system: System, gen: Generator) -> None:
        self.plan = runner.plan
        self.progress = runner.progress
        self.system = system
        self.gen = gen
        self.workers = gen.size
        self.clients = self.plan.storm_clients
        self.room_size = max(1, min(self.plan.storm_room_size, self.clients))
        self.label = f"{system.name} storm"
        self.resume = system.name == "roomcast"
        assert system.cluster is not None
        self.cluster = system.cluster
        self.fill_seconds = 0.0
        self.publishers: list[int] = []
        self.never_joined = 0
        self.groups: dict[str, list[int]] = {}
        self.refused_before = 0.0
        self.refused: float | None = None
        self.calm_started = self.calm_wall = 0.0
        self.calm_cpu: dict[str, float] = {}
        self.killed_at = self.last_change = 0.0
        self.done = False
        self.storm_cpu: dict[str, float] = {}
        self.storm_waited: dict[str, float] = {}
        self.fanout_before: dict[float, float] = {}
        self.died: dict[str, str] = {}
        self.fanout_after: dict[float, float] = {}
        self.storm_wall = 0.0
        self.other = 0.0

    def connect(self) -> None:
        from roomcast_bench.coordinator import BenchError

        workers = self.gen.size
        per_worker: list[list[dict[str, Any]]] = [[] for _ in range(workers)]
        for cid in range(self.clients):
            per_worker[cid % workers].append(
                {"cid": cid, "room": f"storm-{cid // self.room_size}",
                 "publisher": cid % self.room_size == 0}
            )  # fmt: skip
        self.publishers = [sum(spec["publisher"] for spec in w) for w in per_worker]
        started = time.monotonic()

        def show(latest: list[dict[str, Any]]) -> str:
            joined = sum(r.get("joined", 0) for r in latest)
            refusals = sum(r.get("refusals", 0) for r in latest)
            return f"{self.label}: {joined:,}/{self.clients:,} joined ({refusals:,} refusals seen)"

        url = self.system.nginx_url
        replies = self.gen.call(
            "storm_connect",
            [{"clients": w, "url": url, "resume": self.resume, "concurrency": 100}
             for w in per_worker],
            timeout=120 + self.clients / 50, show=show,
        )  # fmt: skip
        joined = sum(r["joined"] for r in replies)
        self.never_joined = self.clients - joined
        # A few stragglers on a starved machine are reported, not fatal; many are.
        if joined < 0.99 * self.clients:
            errors = [e for r in replies for e in r.get("errors", [])]
            raise BenchError(f"{self.label}: {joined} of {self.clients} joined: {errors[:3]}")
        self.fill_seconds = time.monotonic() - started
        self.progress.log(
            f"  {self.label}: {self.clients:,} clients joined in {self.fill_seconds:.1f} s"
        )

    def calm(self) -> None:
        """Publishing starts; the steady state before the kill is measured too."""
        from roomcast_bench.procstat import CpuWindow

        self.groups = {
            "nodes": [n.process.pid for n in self.cluster.nodes[1:]],  # the survivors
            "nginx": list(self.system.pid_groups.get("nginx", [])),
            "redis": list(self.system.pid_groups.get("redis", [])),
            "generator": list(self.gen.pids),
        }
        self.refused_before = _refused(self.system) or 0.0
        # Each worker sends its publishers' share of the rate.
        total = max(1, sum(self.publishers))
        self.gen.call(
            "storm_start",
            [{"rate": self.plan.storm_rate * count / total} for count in self.publishers],
            timeout=60,
        )
        window = CpuWindow(self.groups).start()
        self.calm_started = time.monotonic()
        time.sleep(self.plan.storm_warmup_seconds)
        self.calm_cpu = window.stop()
        self.calm_wall = time.monotonic() - self.calm_started

    def kill_and_wait(self) -> None:
        """SIGKILL the first node; poll until every client it had is back (and resumed)."""
        from roomcast_bench.procstat import CpuWindow

        self.fanout_before = _fanout_buckets(self.system)
        window = CpuWindow(self.groups).start()
        self.killed_at = self.last_change = time.monotonic()
        os.kill(self.cluster.nodes[0].process.pid, signal.SIGKILL)
        last_seen = (-1, -1)
        deadline = self.killed_at + self.plan.storm_timeout
        word = "resumed" if self.resume else "reconnected"
        while time.monotonic() < deadline:
            status = self.gen.call("storm_status", timeout=300)
            disconnected = sum(s["disconnected"] for s in status)
            finished = sum(s[word] for s in status)
            now = time.monotonic()
            if (disconnected, finished) != last_seen:
                last_seen, self.last_change = (disconnected, finished), now
            self.progress.update(
                f"{self.label}: {now - self.killed_at:5.1f} s after the SIGKILL:"
                f" {finished:,}/{disconnected:,} {word},"
                f" {sum(s['refusals'] for s in status):,} refusals seen"
            )
            # Done once every disconnected client is back and nothing moved for a second.
            if disconnected and finished >= disconnected and now - self.last_change >= 1.0:
                self.done = True
                break
            time.sleep(0.25)
        self.storm_cpu = window.stop()
        self.storm_waited = window.waited
        # A survivor that fell over in the storm is a finding: what it said last.
        self.died = {
            n.node_id: f"exit {n.process.popen.returncode}: " + n.process.tail(8)[-1500:]
            for n in self.cluster.nodes[1:]
            if not n.process.alive()
        }
        self.fanout_after = _fanout_buckets(self.system)
        self.other = window.other
        self.storm_wall = time.monotonic() - self.killed_at

    def stop(self) -> list[dict[str, Any]]:
        time.sleep(self.plan.storm_tail_seconds)  # messages keep flowing after the last resume
        windows = {
            "before": [self.calm_started, self.killed_at],
            "storm": [self.killed_at, self.last_change],
        }
        settled = self.gen.call(
            "storm_quiesce", {"quiet": max(self.plan.quiet, 1.0), "grace": self.plan.grace + 5},
            timeout=120,
        )  # fmt: skip
        targets: dict[str, int] = {}
        for reply in settled:
            for room, last in reply["rooms_max"].items():
                targets[room] = max(targets.get(room, 0), last)
        replies = self.gen.call(
            "storm_stop", {"windows": windows, "targets": targets, "grace": TAIL_GRACE},
            timeout=TAIL_GRACE + 900,  # a starved generator is slow to answer
        )  # fmt: skip
        self.refused = _refused(self.system)
        return replies

    def figures(self, replies: list[dict[str, Any]]) -> dict[str, Any]:
        from roomcast_bench.scenarios import percentiles

        def merged(key: str, code: str = "d") -> array[Any]:
            out = array(code)
            for reply in replies:
                out.frombytes(reply[key])
            return out

        def since_kill(values: array[Any]) -> list[float]:
            return sorted(round(v - self.killed_at, 3) for v in values if not math.isnan(v))

        touched = len(merged("disconnected_at"))
        reconnect = since_kill(merged("opened_at"))
        attempts = merged("attempts", "I")
        wall = self.storm_wall
        calm_nodes = self.calm_cpu.get("nodes", 0.0) / self.calm_wall if self.calm_wall else 0.0
        extra_node_cpu = self.storm_cpu.get("nodes", 0.0) - calm_nodes * wall
        entry: dict[str, Any] = {
            "scenario": "storm",
            "server": self.system.name,
            "via": "nginx",
            "clients": self.clients,
            "rooms": math.ceil(self.clients / self.room_size),
            "room_size": self.room_size,
            "messages_per_s": self.plan.storm_rate,
            "generator_workers": self.workers,
            "fill_seconds": round(self.fill_seconds, 2),
            "never_joined_before_the_kill": self.never_joined,
            "join_retries": sum(r["join_retries"] for r in replies),
            "killed_node_clients": touched,
            "finished": self.done,
            "reconnected": len(reconnect),
            "reconnect_seconds": reconnect[-1] if reconnect else None,
            "reconnect_p50_seconds": reconnect[len(reconnect) // 2] if reconnect else None,
            "attempts_per_client": {
                "mean": round(sum(attempts) / len(attempts), 2) if attempts else None,
                "max": max(attempts) if attempts else None,
            },
            "refusals_seen_by_clients": sum(r["refusals"] for r in replies),
            "admission_refusals": (
                None if self.refused is None else self.refused - self.refused_before
            ),
            "latency_untouched_storm_ms": percentiles(_latencies(replies, "storm")),
            "latency_untouched_before_ms": percentiles(_latencies(replies, "before")),
            # The nodes' own histogram over the storm (origin node -> socket write), which a
            # starved load generator cannot inflate; None for the baseline.
            "node_fanout_p99_storm_ms": node_fanout_p99_ms(self.fanout_before, self.fanout_after),
            "storm_wall_seconds": round(wall, 3),
            "cpu_seconds_storm": {k: round(v, 3) for k, v in self.storm_cpu.items()},
            "cores_storm": {k: round(v / wall, 3) for k, v in self.storm_cpu.items()},
            "cores_before": {k: round(v / self.calm_wall, 3) for k, v in self.calm_cpu.items()},
            "surviving_node_cores_storm": round(self.storm_cpu.get("nodes", 0.0) / wall, 3),
            # How long the survivors were runnable but waited for a CPU (the generator and
            # nginx share this machine's cores): a p99 of seconds with nodes waiting as long
            # as they run is the machine's, not the nodes' own work.
            "surviving_node_cpu_wait_share_storm": round(
                self.storm_waited.get("nodes", 0.0) / wall, 3
            ),
            # Above the steady state's share of the same window: what the reconnects cost.
            "node_cpu_us_per_reconnect": (
                round(max(0.0, extra_node_cpu) * 1e6 / touched, 1) if touched else None
            ),
            "other_cores_busy": round(self.other / wall, 3),
            "messages_sent": sum(r["sent"] for r in replies),
            "sends_skipped_while_reconnecting": sum(r["skipped"] for r in replies),
            "reconnected_at_s": reconnect,
            "server_errors": sum(r["server_errors"] for r in replies),
            "connect_failures": sum(r["connect_failures"] for r in replies),
        }
        if self.resume:
            entry.update(_resume_figures(replies, since_kill(merged("resumed_at"))))
        errors = [e for r in replies for e in r.get("errors", [])]
        if errors:
            entry["errors"] = errors[:3]
        if self.died:
            entry["survivors_died"] = self.died
        return entry


def _latencies(replies: list[dict[str, Any]], window: str) -> array[int]:
    out = array("I")
    for reply in replies:
        out.frombytes(reply["latencies"][window])
    return out


def _resume_figures(replies: list[dict[str, Any]], resumes: list[float]) -> dict[str, Any]:
    """Resumed with since, and zero loss by offset: per room, every client ends at the room's
    last offset, having seen every offset once and in order."""
    not_recovered: dict[str, int] = {}
    for reply in replies:
        for reason, count in reply["not_recovered"].items():
            not_recovered[reason] = not_recovered.get(reason, 0) + count
    tail_missing = sum(r["tail_missing"] for r in replies)
    gaps = sum(r["gaps"] for r in replies)
    dups = sum(r["dups"] for r in replies)
    return {
        "resumed": len(resumes),
        "resume_seconds": resumes[-1] if resumes else None,
        "resume_p50_seconds": resumes[len(resumes) // 2] if resumes else None,
        "recovered": sum(r["recovered"] for r in replies),
        "not_recovered": not_recovered,
        "loss": {
            "gaps": gaps,
            "duplicates": dups,
            "tail_missing": tail_missing,
            "clients_with_gaps_or_duplicates": sum(r["clients_with_gaps_or_dups"] for r in replies),
            "other_epochs": sum(r["other_epochs"] for r in replies),
        },
        "zero_loss": gaps == 0 and dups == 0 and tail_missing == 0,
        "resumed_at_s": resumes,
    }


def summary(entry: dict[str, Any]) -> str:
    lat = entry["latency_untouched_storm_ms"]
    line = (
        f"  {entry['server']} storm: {entry['killed_node_clients']:,} clients of the killed node"
        f" reconnected in {entry['reconnect_seconds']} s"
    )
    if "resume_seconds" in entry:
        line += (
            f", resumed in {entry['resume_seconds']} s (zero loss: {entry['zero_loss']},"
            f" {entry['loss']})"
        )
    return line + (
        f"; untouched p99 {lat['p99'] or 0:.1f} ms (nodes' own p99"
        f" {entry.get('node_fanout_p99_storm_ms')} ms); surviving nodes"
        f" {entry['surviving_node_cores_storm']} cores (waiting for a CPU"
        f" {entry.get('surviving_node_cpu_wait_share_storm', '—')}); refusals"
        f" {entry['admission_refusals']}"
    )


def markdown_lines(result: dict[str, Any]) -> list[str]:
    storms = [e for e in result.get("scenarios", []) if e["scenario"] == "storm"]
    if not storms:
        return []
    lines = [
        "| storm | clients | killed node's clients | all reconnected (s) | all resumed (s)"
        " | zero loss | untouched p99 before / during (ms) | nodes' own p99 during (ms)"
        " | surviving nodes (cores) | waiting for a CPU (cores)"
        " | node µs/reconnect | 503 refusals | attempts (mean/max) |",
        "| --- | ---: | ---: | ---: | ---: | --- |" + " ---: |" * 7,
    ]
    for e in storms:
        before = e["latency_untouched_before_ms"]["p99"]
        during = e["latency_untouched_storm_ms"]["p99"]
        att = e["attempts_per_client"]
        lines.append(
            f"| {e['server']} | {e['clients']:,} | {e['killed_node_clients']:,}"
            f" | {e['reconnect_seconds']} | {e.get('resume_seconds', '—')}"
            f" | {e.get('zero_loss', '—')} | {before or 0:.1f} / {during or 0:.1f}"
            f" | {e.get('node_fanout_p99_storm_ms') or '—'}"
            f" | {e['surviving_node_cores_storm']}"
            f" | {e.get('surviving_node_cpu_wait_share_storm', '—')}"
            f" | {e['node_cpu_us_per_reconnect']}"
            f" | {e['admission_refusals'] if e['admission_refusals'] is not None else '—'}"
            f" | {att['mean']} / {att['max']} |"
        )
    return [*lines, ""]


def plot(result: dict[str, Any], path: Path) -> Path | None:
    """Clients of the killed node back (and resumed) vs seconds after the SIGKILL."""
    storms = [e for e in result.get("scenarios", []) if e["scenario"] == "storm"]
    if not storms:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.8))
    colors = {"roomcast": "tab:blue", "baseline": "tab:orange"}
    for e in storms:
        color = colors.get(e["server"], "tab:gray")
        times = e["reconnected_at_s"]
        ax.step(times, range(1, len(times) + 1), where="post", color=color,
                label=f"{e['server']}: reconnected")  # fmt: skip
        if e.get("resumed_at_s"):
            resumed = e["resumed_at_s"]
            ax.step(resumed, range(1, len(resumed) + 1), where="post", color=color, ls="--",
                    label=f"{e['server']}: resumed with since")  # fmt: skip
    ax.set_xlabel("seconds after the SIGKILL")
    ax.set_ylabel("clients of the killed node")
    first = storms[0]
    ax.set_title(
        f"Reconnect storm: {first['clients']:,} clients over 3 nodes, one SIGKILLed"
        f" ({first['messages_per_s']:.0f} messages/s)"
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
