"""A node at its open-files limit: it refuses new clients cleanly, keeps serving the ones it
holds, does not spin, and takes new clients again once descriptors are free.

The node runs with RLIMIT_NOFILE lowered to FD_LIMIT in its own process (set between fork and
exec), so the real kernel limit is hit with a few hundred sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from roomcast_dev.devcluster import ManagedProcess, NodeProcess, timeout_factor
from websockets.exceptions import InvalidHandshake, InvalidStatus

from tests.support.cluster import FAST_ENV, http_get, metric_value
from tests.support.wsclient import Client, scaled

pytestmark = pytest.mark.integration

FD_LIMIT = 300
# roomcast.net.fd_limit: a quarter of so small a limit is kept back.
EXPECTED_MAX = FD_LIMIT - FD_LIMIT // 4


def _lower_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


@contextlib.contextmanager
def node_with_fd_limit(**env: str) -> Iterator[NodeProcess]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
    environment.update(FAST_ENV)
    environment.update(
        ROOMCAST_HOST="127.0.0.1", ROOMCAST_PORT="0", ROOMCAST_METRICS_PORT="0",
        ROOMCAST_NODE_ID="fd-node", ROOMCAST_LOG_LEVEL="INFO", PYTHONUNBUFFERED="1",
        **env,
    )  # fmt: skip
    process = ManagedProcess(
        "fd-node", [sys.executable, "-m", "roomcast"], environment,
        popen_kwargs={"preexec_fn": _lower_fd_limit},
    )  # fmt: skip
    try:
        line = process.wait_for_line(lambda text: '"event":"listening"' in text, 20)
        info = json.loads(line[line.index("{") :])
        node = NodeProcess("fd-node", process, port=int(info["port"]))
        node.metrics_port = int(info["metrics_port"])
        yield node
    finally:
        process.stop()


def metrics(node: NodeProcess) -> str:
    return http_get(f"{node.metrics_url}/metrics")[1]


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def connect_many(url: str, count: int) -> list[Client]:
    clients: list[Client] = []
    for start in range(0, count, 25):
        batch = range(start, min(count, start + 25))
        # Many source addresses, as real clients have (and as the benchmark does).
        clients += await asyncio.gather(
            *(Client.connect(url, local_addr=(f"127.0.9.{1 + i // 100}", 0)) for i in batch)
        )
    return clients


async def round_trip(speaker: Client, listener: Client, text: str) -> None:
    await speaker.send(type="message", text=text)
    await listener.recv_type("message", text=text)


async def connect_when_free(url: str) -> Client:
    """A new client once the node has freed descriptors (it learns of closes asynchronously)."""
    deadline = time.monotonic() + scaled(10)
    while True:
        try:
            return await Client.connect(url)
        except (InvalidStatus, OSError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def close_all(clients: list[Client]) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def test_full_node_answers_503_with_retry_after_and_keeps_serving_its_clients() -> None:
    with node_with_fd_limit() as node:
        text = metrics(node)
        assert metric_value(text, "roomcast_connections_max") == EXPECTED_MAX
        clients = await connect_many(node.url, EXPECTED_MAX)
        try:
            speaker, listener = clients[0], clients[1]
            await speaker.join("full", "speaker")
            await listener.join("full", "listener")
            for _ in range(3):
                with pytest.raises(InvalidStatus) as refused:
                    await Client.connect(node.url)
                response: Any = refused.value.response
                assert response.status_code == 503
                assert response.headers["Retry-After"] == "5"
            text = metrics(node)
            assert metric_value(text, "roomcast_connections_over_limit_total") == 3
            assert metric_value(text, "roomcast_connections_open") == EXPECTED_MAX
            assert any("node full" in line for line in node.process.lines)
            await round_trip(speaker, listener, "still served")
            await clients.pop().close()
            clients.append(await connect_when_free(node.url))
            await round_trip(speaker, listener, "and after one left")
        finally:
            await close_all(clients)


async def test_node_out_of_descriptors_does_not_spin_and_recovers() -> None:
    # The cap above the real limit: accept() itself fails with EMFILE.
    env = {"ROOMCAST_MAX_CONNECTIONS": "100000", "ROOMCAST_HANDSHAKE_TIMEOUT": "600"}
    with node_with_fd_limit(**env) as node:
        pid = node.process.pid
        speaker, listener = await Client.connect(node.url), await Client.connect(node.url)
        await speaker.join("emfile", "speaker")
        await listener.join("emfile", "listener")
        # Plain TCP connections that never finish a handshake hold the node's descriptors.
        hogs: list[socket.socket] = []
        try:
            for index in range(FD_LIMIT + 50):
                sock = socket.socket()
                sock.bind((f"127.0.8.{1 + index // 100}", 0))
                sock.connect(("127.0.0.1", node.port))
                hogs.append(sock)
            deadline = time.monotonic() + scaled(10)
            while open_fds(pid) < FD_LIMIT - 1:
                assert time.monotonic() < deadline, f"node holds only {open_fds(pid)} fds"
                await asyncio.sleep(0.05)
            # At the limit the loop must not busy-retry accept(): a spinning node burns a
            # whole core, an idle one almost nothing.
            window = 2.0
            before = cpu_seconds(pid)
            await asyncio.sleep(window)
            assert cpu_seconds(pid) - before < 0.5 * window * timeout_factor()
            await round_trip(speaker, listener, "served at the limit")
            # libuv accepts and closes what waits (its EMFILE trick): the handshake fails.
            with pytest.raises((InvalidHandshake, OSError, TimeoutError)):
                extra = await Client.connect(node.url)
                await extra.close()
        finally:
            for sock in hogs:
                sock.close()
        newcomer = await connect_when_free(node.url)
        try:
            await newcomer.join("emfile", "newcomer")
            await round_trip(newcomer, listener, "descriptors free again")
        finally:
            await close_all([speaker, listener, newcomer])
