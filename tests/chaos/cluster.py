"""The system under test as real processes: Redis (standalone, Sentinel or Cluster), 3 nodes,
one relay per node in standalone mode (for the blackhole), and nginx in front.

Nodes restart on their old ports, so nginx's upstream list never changes: what clients see
through nginx after a kill or a drain is what a fixed deployment would see.
"""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import redis

from tests.chaos.devtools import (
    LocalCluster,
    ManagedProcess,
    NodeProcess,
    RedisClusterTopology,
    SentinelTopology,
    find_binary,
    free_port,
)

Topology = Literal["standalone", "sentinel", "cluster"]
TOPOLOGIES: tuple[Topology, ...] = ("standalone", "sentinel", "cluster")

PRESENCE_TTL_SECONDS = 3.0
# Short timeouts so that faults are noticed and recovered within a short run; generous rate
# limits so that the harness' steady senders and bursts are never rate-limited.
NODE_ENV = {
    "ROOMCAST_REDIS_TIMEOUT": "1",
    "ROOMCAST_DRAIN_TIMEOUT": "3",
    "ROOMCAST_PRESENCE_TTL": str(PRESENCE_TTL_SECONDS),
    "ROOMCAST_HISTORY_SIZE": "2000",
    "ROOMCAST_RATE_LIMIT_PER_SECOND": "5000",
    "ROOMCAST_RATE_LIMIT_BURST": "5000",
    "ROOMCAST_MESSAGE_RATE_PER_SECOND": "5000",
    "ROOMCAST_MESSAGE_RATE_BURST": "5000",
    "ROOMCAST_API_RATE_PER_SECOND": "5000",
    "ROOMCAST_API_RATE_BURST": "5000",
}


class StandaloneRedis:
    """One redis-server on a fixed port with an AOF fsynced on every write, so that a SIGKILL
    keeps every acknowledged write; restartable with its files or wiped."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = workdir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process: ManagedProcess | None = None

    def start(self) -> None:
        self.process = ManagedProcess(
            "redis",
            [
                find_binary("redis-server"),
                "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes", "--appendfsync", "always",
                "--dir", str(self.dir), "--daemonize", "no", "--loglevel", "notice",
            ],
        )  # fmt: skip
        self.process.wait_for_line(lambda line: "Ready to accept connections" in line, 20)

    def kill(self) -> None:
        if self.process is not None:
            self.process.signal(signal.SIGKILL)
            self.process.popen.wait(10)

    def wipe(self) -> None:
        """Forget everything on disk: the next start is empty (a new machine, no volume)."""
        for path in self.dir.iterdir():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, socket_connect_timeout=5)

    def stop(self) -> None:
        if self.process is not None:
            self.process.signal(signal.SIGCONT)
            self.process.stop()


@dataclass
class NodeSlot:
    """One of the nginx upstreams: a port pair that a node process (re)occupies."""

    index: int
    process: NodeProcess
    relay: ManagedProcess | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    relay_changes: int = 0

    def switch_relay(self, sig: int) -> None:
        """Signal the relay and wait until it says it changed state (see ``relay.py``)."""
        assert self.relay is not None, "standalone Redis only"
        self.relay_changes += 1
        self.relay.signal(sig)
        expected = f"state {self.relay_changes} "
        self.relay.wait_for_line(lambda line: line.startswith(expected), 5)

    @property
    def name(self) -> str:
        return f"slot-{self.index}"

    @property
    def node_id(self) -> str:
        return self.process.node_id


class ChaosCluster:
    def __init__(self, topology: Topology = "standalone", nodes: int = 3) -> None:
        self.topology: Topology = topology
        self.node_count = nodes
        self.workdir = Path(tempfile.mkdtemp(prefix="roomcast-chaos-"))
        self.redis: StandaloneRedis | None = None
        self.sentinel: SentinelTopology | None = None
        self.redis_cluster: RedisClusterTopology | None = None
        self.local = LocalCluster(
            0, redis=False, nginx=True, node_env=NODE_ENV, workdir=self.workdir
        )
        self.slots: list[NodeSlot] = []
        self.relays: list[ManagedProcess] = []

    # Lifecycle

    def start(self) -> ChaosCluster:
        try:
            self._start_redis()
            for index in range(self.node_count):
                self._start_slot(index)
            self.local.start_nginx()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_redis(self) -> None:
        if self.topology == "standalone":
            self.redis = StandaloneRedis(self.workdir)
            self.redis.start()
        elif self.topology == "sentinel":
            self.sentinel = SentinelTopology(workdir=self.workdir / "sentinel").start()
            self.local.node_env.update(self.sentinel.node_env())
        else:
            self.redis_cluster = RedisClusterTopology(workdir=self.workdir / "rcluster").start()
            self.local.node_env.update(self.redis_cluster.node_env())

    def _start_slot(self, index: int) -> None:
        extra: dict[str, str] = {}
        relay = None
        if self.redis is not None:
            relay_port = free_port()
            relay = ManagedProcess(
                f"relay-{index}",
                [sys.executable, "-m", "tests.chaos.relay", str(relay_port), str(self.redis.port)],
            )
            relay.wait_for_line(lambda line: "relay listening" in line, 10)
            self.relays.append(relay)
            extra["ROOMCAST_REDIS_URL"] = f"redis://127.0.0.1:{relay_port}/0"
        node = self.local.start_node(extra)
        extra["ROOMCAST_PORT"] = str(node.port)
        extra["ROOMCAST_METRICS_PORT"] = str(node.metrics_port)
        self.slots.append(NodeSlot(index, node, relay, extra))

    def stop(self) -> None:
        for slot in self.slots:
            slot.process.process.signal(signal.SIGCONT)
        if self.redis is not None:
            self.redis.stop()
        self.local.stop()
        for relay in self.relays:
            relay.stop()
        if self.sentinel is not None:
            for server in self.sentinel.redis_servers:
                server.process.signal(signal.SIGCONT)
            self.sentinel.stop()
        if self.redis_cluster is not None:
            self.redis_cluster.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # Nodes

    @property
    def url(self) -> str:
        return self.local.url

    @property
    def http_url(self) -> str:
        return self.local.http_url

    def restart_node(self, slot: NodeSlot) -> None:
        """A new node process on the slot's old ports (nginx's upstream entry)."""
        slot.process = self.local.start_node(slot.extra_env)

    def node_env_names(self) -> list[str]:
        return sorted(NODE_ENV)

    def diagnostics(self, lines: int = 12) -> dict[str, object]:
        """Each node's readiness and last log lines, for a run that went wrong."""
        out: dict[str, object] = {}
        for slot in self.slots:
            node = slot.process
            try:
                with urllib.request.urlopen(f"{node.metrics_url}/readyz", timeout=2) as answer:
                    ready: object = answer.status
            except urllib.error.HTTPError as exc:
                ready = exc.code
            except OSError as exc:
                ready = str(exc)
            out[node.node_id] = {
                "alive": node.process.alive(),
                "readyz": ready,
                "log": node.process.tail(lines).splitlines(),
            }
        return out

    # Redis access for the injectors

    def redis_admin_clients(self) -> list[redis.Redis]:
        """A client per Redis data server that nodes talk to (the primaries)."""
        if self.redis is not None:
            return [self.redis.client()]
        if self.sentinel is not None:
            return [self.sentinel.primary().client()]
        assert self.redis_cluster is not None
        return [server.client() for server in self.redis_cluster.primaries()]
