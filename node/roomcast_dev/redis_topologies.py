"""Real Redis topologies on loopback for tests and benchmarks: a Redis Cluster (primaries and
replicas) and a Sentinel group (primary, replica, three sentinels).

Every process is Debian's ``redis-server`` started here on free ports in a temporary directory,
awaited through its output or its replies (never a fixed sleep), and stopped here by PID.
Nodes are pointed at them through ``LocalCluster(redis=False, node_env=topology.node_env())``.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import redis

from roomcast_dev.devcluster import (
    ClusterError,
    ManagedProcess,
    find_binary,
    free_port,
    timeout_factor,
)

T = TypeVar("T")
READY_LINE = "Ready to accept connections"


def wait_until(
    probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05
) -> T:
    """Poll ``probe`` until it returns something other than None/False; scaled deadline."""
    deadline = time.monotonic() + timeout * timeout_factor()
    last_error: Exception | None = None
    while True:
        try:
            value = probe()
            if value is not None and value is not False:
                return value
        except (redis.RedisError, OSError) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out waiting for {what} (last error: {last_error})")
        time.sleep(interval)


@dataclass
class RedisServer:
    """One redis-server process (cluster node, standalone primary/replica or sentinel)."""

    name: str
    port: int
    process: ManagedProcess
    password: str | None = None  # its requirepass, if any

    def client(self, timeout: float = 2.0) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )

    def run(self, *args: str | bytes) -> Any:
        """One command, its reply as redis-py parses it."""
        return self.client().execute_command(*args)  # type: ignore[no-untyped-call]

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last write, like a crashed machine."""
        self.process.signal(signal.SIGKILL)
        self.process.popen.wait(10)

    def alive(self) -> bool:
        return self.process.alive()


def _start_server(
    name: str, workdir: Path, args: list[str], sentinel: bool = False
) -> ManagedProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [find_binary("redis-server"), *args]
    if sentinel:
        argv.append("--sentinel")
    process = ManagedProcess(name, argv)
    ready = "Sentinel ID is" if sentinel else READY_LINE
    process.wait_for_line(lambda line: ready in line, 20)
    return process


def _common_args(port: int, workdir: Path) -> list[str]:
    return [
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--daemonize",
        "no",
        "--loglevel",
        "notice",
    ]


class RedisClusterTopology:
    """``primaries`` shards of Redis Cluster, each with ``replicas`` replicas, on loopback.

    ``node_timeout_ms`` is low (1 s) so that a killed primary's replica takes over quickly;
    ``cluster-require-full-coverage no`` keeps the other shards serving meanwhile.
    """

    def __init__(
        self,
        primaries: int = 3,
        replicas: int = 1,
        *,
        node_timeout_ms: int = 1000,
        workdir: Path | None = None,
    ) -> None:
        self.primary_count = primaries
        self.replica_count = replicas
        self.node_timeout_ms = node_timeout_ms
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="roomcast-rediscluster-"))
        self.servers: list[RedisServer] = []
        self._bus_ports: dict[int, int] = {}  # client port -> cluster bus port
        self._args: dict[int, list[str]] = {}  # client port -> redis-server arguments
        self._ids: dict[int, str] = {}  # client port -> cluster node id (kept after a kill)

    def start(self) -> RedisClusterTopology:
        try:
            for index in range(self.primary_count * (1 + self.replica_count)):
                self._start_node(index)
            self._create()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, index: int, *, keep_directory: bool = False) -> RedisServer:
        # A port found free can still be taken before redis-server binds it: try new ones.
        for attempt in range(3):
            try:
                server = self._start_node_on(index, free_port(), free_port())
            except ClusterError as exc:
                if attempt == 2 or "Address already in use" not in str(exc):
                    raise
                if not keep_directory:
                    shutil.rmtree(self.workdir / f"node-{index}", ignore_errors=True)
                continue
            self._ids[server.port] = node_id(server)
            return server
        raise AssertionError("unreachable")

    def _start_node_on(self, index: int, port: int, bus: int) -> RedisServer:
        directory = self.workdir / f"node-{index}"
        process = _start_server(
            f"redis-cluster-{port}",
            directory,
            [
                *_common_args(port, directory),
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                str(bus),
                "--cluster-config-file",
                str(directory / "nodes.conf"),
                "--cluster-node-timeout",
                str(self.node_timeout_ms),
                "--cluster-require-full-coverage",
                "no",
                # Loopback replicas are never far behind: let any of them take over.
                "--cluster-replica-validity-factor",
                "0",
            ],
        )
        server = RedisServer(f"cluster-{index}", port, process)
        self.servers.append(server)
        self._bus_ports[port] = bus
        self._args[port] = process.argv[1:]
        return server

    def restore_backup(self, dead: RedisServer) -> RedisServer:
        """Replace a dead primary the way an operator restores a shard from its backup onto a
        new machine: a new cluster node (new ports, no ``nodes.conf``, so a new identity) started
        on the dead one's last ``SAVE``d snapshot, the dead identity forgotten by every live
        node, the dead one's slots assigned to the new node, which then meets the cluster.

        A node started on keys of slots nobody assigned it takes those slots at start (Redis
        logs "Taking responsibility"); the rest of the dead node's slots are added here."""
        if dead.alive():
            raise ClusterError(f"{dead.name} is still running")
        slots = [(first, last) for first, last, port in self.slot_ranges() if port == dead.port]
        dead_id = self._ids[dead.port]
        snapshot = self.workdir / f"node-{self.servers.index(dead)}" / "dump.rdb"
        index = len(self.servers)
        directory = self.workdir / f"node-{index}"
        directory.mkdir(parents=True)
        if snapshot.exists():
            shutil.copy(snapshot, directory / "dump.rdb")
        server = self._start_node(index, keep_directory=True)
        for other in self.live_servers():
            if other is not server:
                other.run("CLUSTER", "FORGET", dead_id)
        taken = {
            slot for first, last, _ in _slot_ranges_of(server) for slot in range(first, last + 1)
        }
        for first, last in slots:
            for slot in range(first, last + 1):
                if slot not in taken:
                    server.run("CLUSTER", "ADDSLOTS", str(slot))
        seed = next(other for other in self.live_servers() if other is not server)
        seed.run(
            "CLUSTER", "MEET", "127.0.0.1", str(server.port), str(self._bus_ports[server.port])
        )
        self.wait_stable()
        return server

    def restart(self, server: RedisServer) -> None:
        """Start a killed node again on its port and directory: it reads back its
        ``nodes.conf`` (its cluster identity and role) and whatever data file is there (an
        ``SAVE``d snapshot, older than what it acknowledged since), as after a crash."""
        if server.alive():
            raise ClusterError(f"{server.name} is still running")
        directory = self.workdir / f"node-{self.servers.index(server)}"
        server.process = _start_server(
            f"redis-cluster-{server.port}", directory, self._args[server.port]
        )

    def _create(self) -> None:
        if self.primary_count < 3:
            self._create_by_hand()
            return
        addresses = [f"127.0.0.1:{server.port}" for server in self.servers]
        result = subprocess.run(
            [
                find_binary("redis-cli"),
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                str(self.replica_count),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60 * timeout_factor(),
            check=False,
        )
        if result.returncode != 0:
            raise ClusterError(
                f"redis-cli --cluster create failed:\n{result.stdout}\n{result.stderr}"
            )
        self.wait_stable()

    def _create_by_hand(self) -> None:
        """redis-cli wants 3 primaries at least; fewer (a 1-shard baseline) are set up here."""
        if self.replica_count:
            raise ClusterError("fewer than 3 primaries: only without replicas")
        share = 16384 // self.primary_count
        for index, server in enumerate(self.servers):
            last = 16383 if index == self.primary_count - 1 else (index + 1) * share - 1
            server.run("CLUSTER", "ADDSLOTSRANGE", str(index * share), str(last))
            if index:
                bus = str(self._bus_ports[server.port])
                self.servers[0].run("CLUSTER", "MEET", "127.0.0.1", str(server.port), bus)
        self.wait_stable()

    def wait_stable(self, timeout: float = 30) -> None:
        """Every live node sees state ok, full coverage, and every replica is in sync."""

        def stable() -> bool:
            for server in self.live_servers():
                info = server.client().cluster("info")
                if info["cluster_state"] != "ok" or int(info["cluster_slots_ok"]) != 16384:
                    return False
                replication = server.client().info("replication")
                if replication["role"] == "slave" and replication["master_link_status"] != "up":
                    return False
            return len(self.primaries()) == self.primary_count

        wait_until(stable, timeout, "redis cluster to be stable", interval=0.1)

    # Inspection

    def live_servers(self) -> list[RedisServer]:
        return [server for server in self.servers if server.alive()]

    def server_at(self, port: int) -> RedisServer:
        for server in self.servers:
            if server.port == port:
                return server
        raise KeyError(port)

    def slot_ranges(self) -> list[tuple[int, int, int]]:
        """(first slot, last slot, primary port) as a live node sees it now."""
        return _slot_ranges_of(self.live_servers()[0])

    def primaries(self) -> list[RedisServer]:
        ports = sorted({port for _, _, port in self.slot_ranges()})
        return [self.server_at(port) for port in ports]

    def owner_of(self, slot: int) -> RedisServer:
        for first, last, port in self.slot_ranges():
            if first <= slot <= last:
                return self.server_at(port)
        raise KeyError(slot)

    def replicas_of(self, primary: RedisServer) -> list[RedisServer]:
        found = []
        for server in self.live_servers():
            replication = server.client().info("replication")
            if replication["role"] == "slave" and int(replication["master_port"]) == primary.port:
                found.append(server)
        return found

    @property
    def seed_urls(self) -> str:
        return ",".join(f"redis://127.0.0.1:{server.port}" for server in self.servers)

    def node_env(self) -> dict[str, str]:
        return {"ROOMCAST_REDIS_MODE": "cluster", "ROOMCAST_REDIS_URL": self.seed_urls}

    def wait_for_new_owner(self, slot: int, dead: RedisServer, timeout: float = 30) -> RedisServer:
        """After ``dead`` (a primary) was killed: its replica promoted, seen by every live node."""

        def promoted() -> RedisServer | None:
            owners = set()
            for server in self.live_servers():
                reply: Any = server.run("CLUSTER", "SLOTS")
                for entry in reply:
                    if int(entry[0]) <= slot <= int(entry[1]):
                        owners.add(int(entry[2][1]))
            if len(owners) == 1 and dead.port not in owners:
                return self.server_at(owners.pop())
            return None

        return wait_until(promoted, timeout, f"a new primary for slot {slot}", interval=0.05)

    def migration(self, slot: int, target: RedisServer) -> SlotMigration:
        """A live move of ``slot`` from its current owner to ``target`` (another primary)."""
        return SlotMigration(self, slot, self.owner_of(slot), target)

    def stop(self) -> None:
        for server in self.servers:
            server.process.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RedisClusterTopology:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class SlotMigration:
    """One hash slot moved live from ``source`` to ``target``, step by step, by the procedure
    ``redis-cli --cluster reshard`` follows: IMPORTING/MIGRATING, keys moved with MIGRATE, then
    ``SETSLOT NODE`` on the target, the source and every other primary.

    Steps are separate so that a test can act in between (the ASK window)."""

    topology: RedisClusterTopology
    slot: int
    source: RedisServer
    target: RedisServer

    def begin(self) -> None:
        source_id, target_id = node_id(self.source), node_id(self.target)
        self.target.run("CLUSTER", "SETSLOT", str(self.slot), "IMPORTING", source_id)
        self.source.run("CLUSTER", "SETSLOT", str(self.slot), "MIGRATING", target_id)

    def keys_left(self) -> list[bytes]:
        reply: Any = self.source.run("CLUSTER", "GETKEYSINSLOT", str(self.slot), "1000")
        return list(reply)

    def move_keys(self, keys: list[bytes] | None = None) -> int:
        """MIGRATE ``keys`` (default: all the source still holds in the slot) in one command."""
        chosen = self.keys_left() if keys is None else keys
        if chosen:
            self.source.run(
                "MIGRATE",
                "127.0.0.1",
                str(self.target.port),
                "",
                "0",
                str(int(5000 * timeout_factor())),
                "KEYS",
                *chosen,
            )
        return len(chosen)

    def finish(self, timeout: float = 30) -> None:
        """Move what is left, hand the slot over everywhere, and wait until every live node of
        the cluster names the target as its owner."""
        while self.move_keys():
            pass
        target_id = node_id(self.target)
        others = [
            s
            for s in self.topology.primaries()
            if s.port not in (self.source.port, self.target.port)
        ]
        for server in (self.target, self.source, *others):
            server.run("CLUSTER", "SETSLOT", str(self.slot), "NODE", target_id)

        def everyone_agrees() -> bool:
            for server in self.topology.live_servers():
                reply: Any = server.run("CLUSTER", "SLOTS")
                owner = next(
                    (int(e[2][1]) for e in reply if int(e[0]) <= self.slot <= int(e[1])), None
                )
                if owner != self.target.port:
                    return False
            return True

        wait_until(everyone_agrees, timeout, f"every node to see slot {self.slot} moved")

    def run(self) -> None:
        self.begin()
        self.finish()


def _slot_ranges_of(server: RedisServer) -> list[tuple[int, int, int]]:
    reply: Any = server.run("CLUSTER", "SLOTS")
    return sorted((int(entry[0]), int(entry[1]), int(entry[2][1])) for entry in reply)


def node_id(server: RedisServer) -> str:
    raw: Any = server.run("CLUSTER", "MYID")
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class SentinelTopology:
    """One primary, ``replicas`` replicas and ``sentinels`` sentinels (quorum 2) on loopback.

    ``password`` protects the data servers (requirepass and masterauth; the sentinels are told
    it with ``auth-pass``); ``sentinel_password`` protects the sentinels themselves.
    """

    MASTER_NAME = "roomcast"

    def __init__(
        self,
        replicas: int = 1,
        sentinels: int = 3,
        *,
        down_after_ms: int = 1000,
        workdir: Path | None = None,
        password: str | None = None,
        sentinel_password: str | None = None,
    ) -> None:
        self.replica_count = replicas
        self.sentinel_count = sentinels
        self.down_after_ms = down_after_ms
        self.password = password
        self.sentinel_password = sentinel_password
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="roomcast-sentinel-"))
        self.redis_servers: list[RedisServer] = []
        self.sentinels: list[RedisServer] = []

    def start(self) -> SentinelTopology:
        try:
            primary = self._start_redis(0, None)
            for index in range(self.replica_count):
                self._start_redis(index + 1, primary)
            wait_until(self._replicas_in_sync, 20, "replicas in sync")
            for index in range(self.sentinel_count):
                self._start_sentinel(index, primary)
            wait_until(self._sentinels_agree, 30, "sentinels to find each other and the replicas")
        except BaseException:
            self.stop()
            raise
        return self

    def _start_redis(self, index: int, primary: RedisServer | None) -> RedisServer:
        port = free_port()
        directory = self.workdir / f"redis-{index}"
        args = _common_args(port, directory)
        if primary is not None:
            args += ["--replicaof", "127.0.0.1", str(primary.port)]
        if self.password is not None:
            # masterauth on every server: any of them may be a replica after a failover. In a
            # file only this user reads, never on a command line (`ps` shows those to anyone).
            directory.mkdir(parents=True, exist_ok=True)
            secrets = directory / "auth.conf"
            secrets.touch(mode=0o600)
            secrets.write_text(f"requirepass {self.password}\nmasterauth {self.password}\n")
            args += ["--include", str(secrets)]
        server = RedisServer(
            f"redis-{index}",
            port,
            _start_server(f"redis-{port}", directory, args),
            password=self.password,
        )
        self.redis_servers.append(server)
        return server

    def _start_sentinel(self, index: int, primary: RedisServer) -> RedisServer:
        port = free_port()
        directory = self.workdir / f"sentinel-{index}"
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "sentinel.conf"  # sentinels rewrite their config: a file of their own
        name = self.MASTER_NAME
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
            f"sentinel monitor {name} 127.0.0.1 {primary.port} 2\n"
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}\n"
            f"sentinel failover-timeout {name} 10000\n"
            f"sentinel parallel-syncs {name} 1\n"
        )
        with config.open("a") as extra:
            if self.password is not None:
                extra.write(f"sentinel auth-pass {name} {self.password}\n")
            if self.sentinel_password is not None:
                extra.write(
                    f"requirepass {self.sentinel_password}\n"
                    f"sentinel sentinel-pass {self.sentinel_password}\n"
                )
        process = _start_server(f"sentinel-{port}", directory, [str(config)], sentinel=True)
        server = RedisServer(f"sentinel-{index}", port, process, password=self.sentinel_password)
        self.sentinels.append(server)
        return server

    def restart_sentinel(self, dead: RedisServer) -> RedisServer:
        """A killed sentinel started again on its port, from the config it last rewrote (what
        it knew of the primary, the replicas and the other sentinels)."""
        index = self.sentinels.index(dead)
        directory = self.workdir / f"sentinel-{index}"
        config = [str(directory / "sentinel.conf")]
        process = _start_server(f"sentinel-{dead.port}", directory, config, sentinel=True)
        server = RedisServer(dead.name, dead.port, process, password=self.sentinel_password)
        self.sentinels[index] = server
        return server

    def _replicas_in_sync(self) -> bool:
        for server in self.redis_servers[1:]:
            if server.client().info("replication").get("master_link_status") != "up":
                return False
        return True

    def _sentinels_agree(self) -> bool:
        for sentinel in self.sentinels:
            others = sentinel.run("SENTINEL", "SENTINELS", self.MASTER_NAME)
            replicas = sentinel.run("SENTINEL", "REPLICAS", self.MASTER_NAME)
            if len(others) != self.sentinel_count - 1 or len(replicas) != self.replica_count:
                return False
        return True

    def primary_port(self) -> int:
        """The primary's port as the first live sentinel reports it."""
        for sentinel in self.sentinels:
            if sentinel.alive():
                host_port: Any = sentinel.run(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.MASTER_NAME
                )
                return int(host_port[1])
        raise ClusterError("no sentinel alive")

    def primary(self) -> RedisServer:
        port = self.primary_port()
        for server in self.redis_servers:
            if server.port == port:
                return server
        raise KeyError(port)

    def wait_for_failover(self, old_port: int, timeout: float = 30) -> RedisServer:
        """Every sentinel names a new primary, and that server says it is one."""

        def switched() -> RedisServer | None:
            ports = set()
            for sentinel in self.sentinels:
                reply: Any = sentinel.run("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.MASTER_NAME)
                ports.add(int(reply[1]))
            if len(ports) != 1 or old_port in ports:
                return None
            server = self.primary()
            return server if server.client().info("replication")["role"] == "master" else None

        return wait_until(switched, timeout, "sentinel failover", interval=0.1)

    @property
    def sentinel_list(self) -> str:
        return ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)

    def node_env(self) -> dict[str, str]:
        env = {
            "ROOMCAST_REDIS_MODE": "sentinel",
            "ROOMCAST_REDIS_SENTINELS": self.sentinel_list,
            "ROOMCAST_REDIS_SENTINEL_MASTER": self.MASTER_NAME,
        }
        if self.password is not None:
            # Only the URL's credentials are used in sentinel mode; Sentinel names the host.
            env["ROOMCAST_REDIS_URL"] = f"redis://:{self.password}@sentinel-named-primary/0"
        if self.sentinel_password is not None:
            env["ROOMCAST_REDIS_SENTINEL_PASSWORD"] = self.sentinel_password
        return env

    def stop(self) -> None:
        for server in (*self.sentinels, *self.redis_servers):
            server.process.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> SentinelTopology:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
