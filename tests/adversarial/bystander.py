"""The shared bystander-latency probe: a well-behaved member on the attacked node, timed."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

from tests.adversarial.devcluster_shim import scaled
from tests.adversarial.observe import Bystander, ProbeResult

# The bystander's p99 round trip (presence or own echo, node + Redis) while an attack runs on its
# node. Unloaded it is ~1-3 ms on loopback; 50 ms is a blink for a chat user and still far below
# what the undefended node showed (12.7 s). Scaled by ROOMCAST_TEST_TIMEOUT_FACTOR.
BYSTANDER_P99_MS = 50.0


def node_of(cluster: Any, node_id: str) -> Any:
    for node in cluster.nodes:
        if node.node_id == node_id:
            return node
    raise AssertionError(f"no node {node_id}")


@contextlib.contextmanager
def attacker_on_one_cpu() -> Iterator[None]:
    """Gives the attacking client (this test's thread) only the CPU the servers leave over while
    the probe runs: it is confined to one CPU and scheduled at idle priority (SCHED_IDLE).

    Here the attacker runs on the servers' machine, which a remote attacker does not. On two
    cores its own CPU kept the attacked node waiting for a CPU, which measured the test's
    machine, not the node:
    - the 72 MB fill-Redis burst: the attacker took ~0.6 s of CPU, as much as the three nodes
      together; the node ran 114 ms and waited 258 ms (/proc/PID/schedstat), one 85-160 ms
      round trip;
    - ten connections bursting 12 MB into a 13-member room (the attacker also reads every
      60 KB echo, 40 MB): pinned, it still took 260-420 ms of each ~0.5 s, the node waited as
      long as it ran (58-105 ms each), and the bystander's worst round trip was 31-131 ms. At
      idle priority the node waits 47-54 ms and the worst round trip is 6-33 ms.
    The attacker still sends everything at once; it reads what the servers send when they leave
    a CPU idle, as a remote attacker on a slower link would. Processes started meanwhile inherit
    the affinity and policy, so the servers are all started before. Going back from idle
    priority needs root (CAP_SYS_NICE); without it the thread stays pinned only."""
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        yield
        return
    os.sched_setaffinity(0, {max(cpus)})
    idle = _enter_idle_priority()
    try:
        yield
    finally:
        if idle:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        os.sched_setaffinity(0, cpus)


def _enter_idle_priority() -> bool:
    if os.geteuid() != 0 or not hasattr(os, "SCHED_IDLE"):
        return False  # it could not come back to normal priority for the tests that follow
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    return True


class BystanderProbe:
    """``with probe.on(node) as result:`` runs the bystander during the block; ``result`` fills in
    when the block ends. :meth:`assert_fast` states the bound."""

    @contextlib.contextmanager
    def on(self, node: Any) -> Iterator[list[ProbeResult]]:
        bystander = Bystander(node.url, f"bystander-{uuid.uuid4().hex[:8]}")
        result: list[ProbeResult] = []
        try:
            with attacker_on_one_cpu():
                yield result
            result.append(bystander.finish())
        finally:
            bystander.kill()

    @staticmethod
    def assert_fast(result: list[ProbeResult], what: str) -> None:
        assert result, "the probe did not finish"
        measured = result[0]
        bound = BYSTANDER_P99_MS * scaled(1)
        assert not measured.failures, f"bystander during {what}: {measured.describe()}"
        assert measured.p99() < bound, (
            f"bystander p99 {measured.p99():.1f} ms over {bound:.0f} ms during {what}: "
            f"{measured.describe()}"
        )
