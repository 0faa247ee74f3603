"""The dashboard's picture from a live run: redis + 3 nodes + nginx + Prometheus on loopback,
chat traffic (joins, messages, typing, refused frames), one node replaced halfway (a rolling
update), then every panel drawn from what Prometheus scraped.

    python -m roomcast_dev.dashboard_shot --out docs/img/dashboard.png --duration 120

(`make dashboard-shot`). Loopback only; every process it starts is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from roomcast_dev.dashboard import collect, load_panels, render
from roomcast_dev.devcluster import LocalCluster
from roomcast_dev.prometheus import LocalPrometheus

SCRAPE_INTERVAL = 2.0
RATE_INTERVAL = "20s"


def _targets(cluster: LocalCluster) -> dict[str, str]:
    return {
        node.node_id: f"127.0.0.1:{node.metrics_port}"
        for node in cluster.nodes
        if node.process.alive()
    }


async def _chatter(url: str, index: int, rooms: int, stop_at: float) -> None:
    """One person: joins a room, talks about once a second, types, sometimes sends a frame the
    node refuses; reconnects when its node goes away (as the real clients do)."""
    rng = random.Random(index)
    room = f"room-{index % rooms}"
    while time.monotonic() < stop_at:
        try:
            # Each person from an address of its own, as people are: one address would meet
            # the per-address limits (nginx's and the node's) that stop a single-host flood.
            source = (f"127.0.{1 + index // 200}.{1 + index % 200}", 0)
            async with connect(url, open_timeout=10, local_addr=source) as ws:
                await ws.send(_text({"type": "join", "room": room, "username": f"u{index}"}))
                reader = asyncio.create_task(_drain(ws))
                while time.monotonic() < stop_at:
                    await asyncio.sleep(rng.uniform(0.5, 1.5))
                    roll = rng.random()
                    if roll < 0.03:
                        await ws.send("{not json")  # counted as a refused frame
                    elif roll < 0.2:
                        await ws.send(_text({"type": "typing"}))
                    else:
                        await ws.send(_text({"type": "message", "text": f"hello {roll:.3f}"}))
                reader.cancel()
        except (OSError, TimeoutError, WebSocketException):  # the node went away: come back
            await asyncio.sleep(rng.uniform(0.2, 1.0))


def _text(frame: dict[str, str]) -> str:
    return orjson.dumps(frame).decode()


async def _drain(ws: ClientConnection) -> None:
    with contextlib.suppress(WebSocketException):
        async for _ in ws:
            pass


async def _traffic(url: str, people: int, rooms: int, duration: float) -> None:
    stop_at = time.monotonic() + duration
    tasks = []
    for index in range(people):
        tasks.append(asyncio.create_task(_chatter(url, index, rooms, stop_at)))
        await asyncio.sleep(duration * 0.2 / people)  # arrivals spread over the first fifth
    await asyncio.gather(*tasks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img/dashboard.png"))
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of traffic")
    parser.add_argument("--people", type=int, default=90)
    parser.add_argument("--rooms", type=int, default=12)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="roomcast-dashboard-"))
    try:
        return _session(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _session(args: argparse.Namespace, workdir: Path) -> int:
    (workdir / "cluster").mkdir()
    with LocalCluster(nodes=3, workdir=workdir / "cluster") as cluster:
        prometheus = LocalPrometheus(workdir / "prometheus", SCRAPE_INTERVAL)
        try:
            prometheus.start(_targets(cluster))
            started = time.time()
            print(f"traffic: {args.people} people in {args.rooms} rooms for {args.duration:.0f} s")
            loop_thread = _run_in_thread(
                _traffic(cluster.url, args.people, args.rooms, args.duration)
            )
            time.sleep(args.duration * 0.55)
            # A rolling update of one node: a new node joins, the oldest leaves (SIGTERM: it
            # drains), its clients come back through nginx on the others.
            print("rolling update: node-4 starts, node-1 drains and stops")
            cluster.start_node()
            prometheus.set_targets(_targets(cluster))
            retiring = cluster.nodes[0].process
            retiring.signal(signal.SIGTERM)  # it drains: its clients are told to come back
            retiring.popen.wait(60)
            cluster.reload_nginx()
            loop_thread.join()
            # The picture ends while everyone is still connected (at the end they all leave).
            ended = started + args.duration - SCRAPE_INTERVAL
            panels = load_panels(rate_interval=RATE_INTERVAL)
            series = collect(
                panels, lambda expr: prometheus.query_range(expr, started, ended, SCRAPE_INTERVAL)
            )
            empty = [title for title, found in series.items() if not found]
            render(panels, series, args.out, "roomcast (observability/grafana-dashboard.json)")
            print(f"wrote {args.out}; panels without data: {empty or 'none'}")
        finally:
            prometheus.stop()
    return 0


def _run_in_thread(coroutine: Coroutine[Any, Any, None]) -> threading.Thread:
    thread = threading.Thread(target=asyncio.run, args=(coroutine,), daemon=True)
    thread.start()
    return thread


if __name__ == "__main__":
    sys.exit(main())
