"""Shared by the adversarial suites: the attacks' building blocks, and what an attack costs
everyone else (a bystander's round trip, a node's memory, the kernel's queues)."""

from __future__ import annotations

import asyncio
import itertools
import socket
import statistics
import time
from pathlib import Path
from urllib.parse import urlsplit

from roomcast_dev.devcluster import NodeProcess

from tests.support.wsclient import Client

BIG_TEXT = "x" * 60_000  # a 60 KB message: within the default 64 KiB frame limit
# 16 of them (each costs its bytes + 1 KiB) fit the default receive burst of one client, 1 MiB.
BURST = 16
# A round trip through Redis and back is ~1 ms here; a starved node took seconds (issue 15).
FEW_MS = 50.0

_ids = itertools.count(1)


# Each attacking client comes from its own loopback address (127.0.0.2 onwards), as separate
# machines would: the per-client limits (by address in open mode) apply to each on its own.
_addresses = itertools.count(2)


async def connect_from_new_address(url: str) -> Client:
    """A client on a loopback address of its own (directly, or through nginx, which passes the
    address on in X-Forwarded-For)."""
    number = next(_addresses)
    assert number < 255 * 250, "out of loopback addresses"
    address = f"127.0.{number // 250}.{number % 250 + 2}"
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((address, 0))
    sock.setblocking(False)
    assert parts.hostname is not None and parts.port is not None
    await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
    return await Client.connect(url, sock=sock)


async def burst(url: str, room: str, count: int = BURST) -> int:
    """One client sends ``count`` 60 KB messages at once; returns the last offset."""
    sender = await connect_from_new_address(url)
    await sender.join(room, "burster")
    for index in range(count):
        await sender.send(type="message", room=room, text=BIG_TEXT, id=f"b{index}")
    last = 0
    for index in range(count):
        last = (await sender.recv_type("ack", id=f"b{index}"))["offset"]
    await sender.close()
    return int(last)


async def bystander_rtt(node: NodeProcess, room: str) -> float:
    """A bystander on ``node``: its median round trip in ``room``."""
    client = await connect_from_new_address(node.url)
    try:
        await client.join(room, "bystander")
        return await round_trip_ms(client, room)
    finally:
        await client.close()


async def round_trip_ms(client: Client, room: str, samples: int = 15) -> float:
    """Median time from sending a chat message to its ack (one trip through Redis and back)."""
    timings = []
    for _ in range(samples):
        request_id = f"rtt-{next(_ids)}"
        started = time.perf_counter()
        await client.send(type="message", room=room, text="ping", id=request_id)
        await client.recv_type("ack", id=request_id)
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def queued_tcp_bytes(ports: set[int]) -> int:
    """Bytes the kernel holds in send and receive queues of IPv4 TCP sockets touching ``ports``
    (both ends of each loopback connection are listed): kernel memory an attack pins."""
    total = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, queues = fields[1], fields[2], fields[4]
        if int(local.split(":")[1], 16) in ports or int(remote.split(":")[1], 16) in ports:
            tx, rx = queues.split(":")
            total += int(tx, 16) + int(rx, 16)
    return total
