"""nginx never keeps clients away from ready nodes: after a node is SIGKILLed, and after another
is drained (SIGTERM), every client that reconnects through nginx reaches a surviving node on its
first attempt, and a node that comes back is used at once. Measures the reconnect time
(p50/p99/max) of 60 clients each time."""

from __future__ import annotations

import asyncio
import signal
import statistics
import time
from collections.abc import Iterator
from functools import partial

import pytest
from roomcast_dev.devcluster import LocalCluster
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.support.cluster import FAST_ENV, ready, until
from tests.support.wsclient import Client, scaled

pytestmark = pytest.mark.integration

CLIENTS = 60


@pytest.fixture
def three_nodes() -> Iterator[LocalCluster]:
    env = dict(FAST_ENV, ROOMCAST_DRAIN_TIMEOUT="3")
    with LocalCluster(3, node_env=env) as running:
        yield running


async def first_attempt(url: str) -> tuple[float, str]:
    """(seconds, node) of one connection through nginx; any refusal fails the test."""
    started = time.monotonic()
    try:
        ws = await connect(url, open_timeout=scaled(10))
    except InvalidStatus as exc:
        raise AssertionError(f"nginx answered {exc.response.status_code}") from exc
    try:
        welcome = await asyncio.wait_for(ws.recv(), scaled(10))
    finally:
        await ws.close()
    assert isinstance(welcome, str) and '"welcome"' in welcome
    node = welcome.split('"node":"', 1)[1].split('"', 1)[0]
    return time.monotonic() - started, node


def figures(times: list[float]) -> str:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (
        f"p50 {statistics.median(ordered) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"max {ordered[-1] * 1000:.0f} ms"
    )


async def reconnect_all(url: str, gone: set[str]) -> list[float]:
    """CLIENTS connections at once, as clients do after losing their node."""
    results = await asyncio.gather(*(first_attempt(url) for _ in range(CLIENTS)))
    landed = {node for _, node in results}
    assert not landed & gone, f"sent to {landed & gone}"
    return [seconds for seconds, _ in results]


async def test_clients_reach_a_surviving_node_on_their_first_retry(
    three_nodes: LocalCluster,
) -> None:
    cluster = three_nodes
    held = [await Client.connect(cluster.url) for _ in range(CLIENTS)]
    try:
        assert {c.node for c in held} == {n.node_id for n in cluster.nodes}
        killed, drained = cluster.nodes[0], cluster.nodes[1]

        killed.process.signal(signal.SIGKILL)
        await asyncio.to_thread(killed.process.popen.wait, scaled(10))
        after_kill = await reconnect_all(cluster.url, {killed.node_id})
        # Again: a second wave must not find nodes marked down by the first one.
        again = await reconnect_all(cluster.url, {killed.node_id})

        drained.process.signal(signal.SIGTERM)
        victims = [c for c in held if c.node == drained.node_id]
        for client in victims:
            code, _ = await client.expect_close()
            assert code == 1001
        after_drain = await reconnect_all(cluster.url, {killed.node_id, drained.node_id})

        # The killed node comes back on its port (a supervisor restarted it): nginx must use
        # it at once, not shun it for a fail_timeout because it failed before.
        back = cluster.start_node({"ROOMCAST_PORT": str(killed.port)})
        await until(partial(ready, back), 20, "the restarted node ready")
        landed = await asyncio.gather(*(first_attempt(cluster.url) for _ in range(CLIENTS)))
        assert back.node_id in {node for _, node in landed}, "the restarted node was shunned"
        print(
            f"\nreconnect through nginx ({CLIENTS} clients each):"
            f"\n  after SIGKILL of one node: {figures(after_kill)}"
            f"\n  a second wave:             {figures(again)}"
            f"\n  after SIGTERM of another:  {figures(after_drain)}"
        )
        for times in (after_kill, again, after_drain):
            assert max(times) < scaled(2.0)
    finally:
        for client in held:
            await client.close()
