"""What each hook costs per call: latency (p50/p99) and node CPU, with and without the hook.

Run: `.venv/bin/python bench/hooks_cost.py` (~1 min). One node (real redis-server, no nginx)
per case; the hook server is a tiny h11 server in this process that answers "allow" at once, so
the figures are roomcast's own cost of asking (HTTP round trip, JSON, policy), not a backend's.
Each case: the same work without the hook, then with it.

    publish  4 clients x 500 messages, each sent when the previous one's ack came back
    join     4 clients x 150 join + leave of a fresh room (the time to `joined`)
    connect  300 handshakes one after the other (the time to `welcome`; the hook reads a cookie)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from roomcast_bench.procstat import cpu_seconds
from roomcast_dev.devcluster import LocalCluster, free_port
from roomcast_dev.hookserver import HookServer
from websockets.asyncio.client import ClientConnection, connect

UNLIMITED = {
    name: "1000000"
    for name in (
        "ROOMCAST_RATE_LIMIT_PER_SECOND",
        "ROOMCAST_RATE_LIMIT_BURST",
        "ROOMCAST_MESSAGE_RATE_PER_SECOND",
        "ROOMCAST_MESSAGE_RATE_BURST",
        "ROOMCAST_JOIN_RATE_PER_SECOND",
        "ROOMCAST_JOIN_RATE_BURST",
        "ROOMCAST_CLIENT_MESSAGE_RATE_PER_SECOND",
        "ROOMCAST_CLIENT_MESSAGE_RATE_BURST",
        "ROOMCAST_CLIENT_JOIN_RATE_PER_SECOND",
        "ROOMCAST_CLIENT_JOIN_RATE_BURST",
        "ROOMCAST_ROOM_MESSAGE_RATE_PER_SECOND",
        "ROOMCAST_ROOM_MESSAGE_RATE_BURST",
    )
} | {
    "ROOMCAST_CLIENT_RECEIVE_BYTES_PER_SECOND": "1099511627776",
    "ROOMCAST_CLIENT_RECEIVE_BYTES_BURST": "1099511627776",
    "ROOMCAST_CLIENT_HISTORY_WRITE_BYTES_PER_SECOND": "1099511627776",
    "ROOMCAST_CLIENT_HISTORY_WRITE_BYTES_BURST": "1099511627776",
}

Work = Callable[[str], Awaitable[list[float]]]


async def opened(url: str, **kwargs: Any) -> ClientConnection:
    ws = await connect(url, max_queue=None, **kwargs)
    welcome = json.loads(await ws.recv())
    assert welcome["type"] == "welcome", welcome
    return ws


async def answer(ws: ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        event: dict[str, Any] = json.loads(await ws.recv())
        if event["type"] == kind:
            return event
        if event["type"] == "error":
            raise RuntimeError(event)


async def publishes(url: str, clients: int = 4, each: int = 500) -> list[float]:
    async def one(number: int) -> list[float]:
        ws = await opened(url)
        await ws.send(json.dumps({"type": "join", "room": "bench", "username": f"u{number}"}))
        await answer(ws, "joined")
        times = []
        for n in range(each):
            started = time.perf_counter()
            await ws.send(json.dumps({"type": "message", "room": "bench", "text": "x", "id": n}))
            await answer(ws, "ack")
            times.append(time.perf_counter() - started)
        await ws.close()
        return times

    results = await asyncio.gather(*(one(n) for n in range(clients)))
    return [t for times in results for t in times]


async def joins(url: str, clients: int = 4, each: int = 150) -> list[float]:
    async def one(number: int) -> list[float]:
        ws = await opened(url)
        times = []
        for n in range(each):
            room = f"r{number}-{n}"
            started = time.perf_counter()
            await ws.send(json.dumps({"type": "join", "room": room, "username": f"u{number}"}))
            await answer(ws, "joined")
            times.append(time.perf_counter() - started)
            await ws.send(json.dumps({"type": "leave", "room": room}))
            await answer(ws, "left")
        await ws.close()
        return times

    results = await asyncio.gather(*(one(n) for n in range(clients)))
    return [t for times in results for t in times]


async def connects(url: str, count: int = 300) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        ws = await opened(url, additional_headers={"Cookie": "session=bench"})
        times.append(time.perf_counter() - started)
        await ws.close()
    return times


CASES: dict[str, tuple[str, Work]] = {
    "publish": ("ROOMCAST_HOOK_PUBLISH_URL", publishes),
    "join": ("ROOMCAST_HOOK_JOIN_URL", joins),
    "connect": ("ROOMCAST_HOOK_CONNECT_URL", connects),
}


async def measure(work: Work, env: dict[str, str]) -> dict[str, float]:
    with LocalCluster(1, nginx=False, node_env={**UNLIMITED, **env}) as cluster:
        node = cluster.nodes[0]
        await work(node.url)  # warm-up: connections, caches, the hook client's pool
        pid = node.process.pid
        before = cpu_seconds(pid)
        times = await work(node.url)
        cpu = cpu_seconds(pid) - before
    times.sort()
    return {
        "calls": len(times),
        "p50_ms": statistics.median(times) * 1e3,
        "p99_ms": times[int(len(times) * 0.99) - 1] * 1e3,
        "node_cpu_us_per_call": cpu / len(times) * 1e6,
    }


def line(figures: dict[str, float]) -> str:
    return (
        f"p50 {figures['p50_ms']:.2f} ms  p99 {figures['p99_ms']:.2f} ms"
        f"  node CPU {figures['node_cpu_us_per_call']:.0f} µs/call"
    )


async def main(selected: list[str]) -> None:
    port = free_port()
    async with HookServer(port) as hooks:
        for name in selected:
            variable, work = CASES[name]
            without = await measure(work, {})
            with_hook = await measure(work, {variable: f"{hooks.url}/hooks/{name}"})
            extra = with_hook["node_cpu_us_per_call"] - without["node_cpu_us_per_call"]
            print(f"{name:8} without: {line(without)}")
            print(f"{'':8} with:    {line(with_hook)}  (the hook: +{extra:.0f} µs CPU)", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", help=f"some of {', '.join(CASES)} (default: all)")
    chosen = parser.parse_args().cases or list(CASES)
    unknown = set(chosen) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    asyncio.run(main(chosen))
