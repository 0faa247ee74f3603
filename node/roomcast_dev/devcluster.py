"""A whole roomcast cluster as local processes: redis-server, N nodes, nginx, all on loopback.

``make run`` uses it (``python -m roomcast_dev.devcluster``), and so do the integration tests
and the benchmark: the same code path a person tries by hand is the one the tests exercise.
Every process is started here, watched through its output, and stopped here by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from roomcast.runtime.config import env_name, env_names

REPO_ROOT = Path(__file__).resolve().parents[2]
LOADBALANCER_DIR = REPO_ROOT / "loadbalancer"
NGINX_TEMPLATE = LOADBALANCER_DIR / "nginx.conf.template"
STATIC_DIR = LOADBALANCER_DIR / "static"


class ClusterError(RuntimeError):
    pass


# Listening ports are picked from here up to the kernel's ephemeral range.
LISTEN_PORTS_FLOOR: Final = 10_000
EPHEMERAL_RANGE_FILE: Final = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port() -> int:
    """A port free right now on 127.0.0.1 (for servers that cannot bind port 0 themselves).

    It is taken below the kernel's ephemeral range where there is room: a port of that range
    (what binding port 0 returns) can be taken by any outgoing connection, a node's to Redis or
    nginx's to a node, between this check and the server's own bind. That failed a Redis Cluster
    start in CI with ``Address already in use``.
    """
    ephemeral_floor = _ephemeral_floor()
    if ephemeral_floor - LISTEN_PORTS_FLOOR >= 1000:
        for _ in range(64):
            port = LISTEN_PORTS_FLOOR + secrets.randbelow(ephemeral_floor - LISTEN_PORTS_FLOOR)
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ephemeral_floor() -> int:
    try:
        return int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def timeout_factor() -> float:
    """Slow machines set ROOMCAST_TEST_TIMEOUT_FACTOR; every wait here scales with it."""
    try:
        return max(0.1, float(os.environ.get("ROOMCAST_TEST_TIMEOUT_FACTOR", "1")))
    except ValueError:
        return 1.0


# Issue 15's join, client and room limits switched off, for local runs that are one client
# sending a lot (tests and benchmarks from 127.0.0.1 in open mode).
SHARED_LIMITS_OFF: Final = {
    "ROOMCAST_JOIN_RATE_PER_SECOND": "1000000",
    "ROOMCAST_JOIN_RATE_BURST": "1000000",
    "ROOMCAST_CLIENT_MESSAGE_RATE_PER_SECOND": "1000000",
    "ROOMCAST_CLIENT_MESSAGE_RATE_BURST": "1000000",
    "ROOMCAST_CLIENT_JOIN_RATE_PER_SECOND": "1000000",
    "ROOMCAST_CLIENT_JOIN_RATE_BURST": "1000000",
    "ROOMCAST_CLIENT_TYPING_RATE_PER_SECOND": "1000000",
    "ROOMCAST_CLIENT_TYPING_RATE_BURST": "1000000",
    "ROOMCAST_CLIENT_TOKEN_CHECK_RATE_PER_SECOND": "1000000",
    "ROOMCAST_CLIENT_TOKEN_CHECK_RATE_BURST": "1000000",
    "ROOMCAST_CLIENT_HISTORY_BYTES_PER_SECOND": "1099511627776",
    "ROOMCAST_CLIENT_HISTORY_BYTES_BURST": "1099511627776",
    "ROOMCAST_CLIENT_HISTORY_WRITE_BYTES_PER_SECOND": "1099511627776",
    "ROOMCAST_CLIENT_HISTORY_WRITE_BYTES_BURST": "1099511627776",
    "ROOMCAST_ROOM_MESSAGE_RATE_PER_SECOND": "1000000",
    "ROOMCAST_ROOM_MESSAGE_RATE_BURST": "1000000",
    "ROOMCAST_ROOM_TYPING_RATE_PER_SECOND": "1000000",
    "ROOMCAST_ROOM_TYPING_RATE_BURST": "1000000",
    "ROOMCAST_CLIENT_RECEIVE_BYTES_PER_SECOND": "1099511627776",
    "ROOMCAST_CLIENT_RECEIVE_BYTES_BURST": "1099511627776",
}


class ManagedProcess:
    """A child process whose output lines are collected, so readiness is awaited, not slept."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: Mapping[str, str] | None = None,
        popen_kwargs: Mapping[str, Any] | None = None,  # cwd, user, group, ...
    ) -> None:
        self.name = name
        self.argv = argv
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.popen = subprocess.Popen(
            argv,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop them in order
            **(popen_kwargs or {}),
        )
        self._reader = threading.Thread(target=self._read, name=f"{name}-output", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_line(self, predicate: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout * timeout_factor()
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self.lines)
                if self.popen.poll() is not None and not self._reader.is_alive():
                    raise ClusterError(
                        f"{self.name} exited ({self.popen.returncode}):\n{self.tail()}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ClusterError(f"{self.name} not ready in time:\n{self.tail()}")
                self._changed.wait(remaining)

    def tail(self, count: int = 30) -> str:
        return "\n".join(self.lines[-count:])

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.popen.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._reader.join(2)
        return self.popen.returncode


@dataclass
class NodeProcess:
    node_id: str
    process: ManagedProcess
    port: int = 0
    metrics_port: int = 0
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/chat"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"


def _json_line(line: str) -> dict[str, Any] | None:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def find_binary(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise ClusterError(f"{name} not found: run `make deps` (installs Debian's {name})")


def render_nginx_config(
    listen_port: int,
    node_ports: list[int],
    prefix: Path,
    static_dir: Path = STATIC_DIR,
    template: Path = NGINX_TEMPLATE,
) -> str:
    # max_fails=0: nginx never marks a node unavailable (max_fails=1 kept a node that failed
    # once, or came back, out of rotation for fail_timeout while it was ready); a dead node
    # refuses at once and proxy_next_upstream moves that one connection to the next node.
    servers = "\n".join(f"        server 127.0.0.1:{port} max_fails=0;" for port in node_ports)
    return (
        template.read_text()
        .replace("@LISTEN@", f"127.0.0.1:{listen_port}")
        .replace("@UPSTREAM_SERVERS@", servers.strip())
        .replace("@STATIC_ROOT@", str(static_dir))
        .replace("@PREFIX@", str(prefix))
    )


# Redis' memory bound and what goes first when it is reached, as in docker-compose.yml and
# k8s/10-redis.yaml: volatile-ttl evicts the keys nearest their expiry (rooms' histories before
# offset counters); presence and the node registry have no expiry and are never evicted.
REDIS_MAXMEMORY: Final = "256mb"
REDIS_MAXMEMORY_POLICY: Final = "volatile-ttl"


class LocalCluster:
    """redis-server + N roomcast nodes + nginx on loopback, each in its own process."""

    def __init__(
        self,
        nodes: int = 3,
        *,
        redis: bool = True,
        nginx: bool = True,
        node_env: Mapping[str, str] | None = None,
        nginx_port: int = 0,
        workdir: Path | None = None,
        redis_password: str | None = None,
    ) -> None:
        self.redis_password = redis_password
        self.node_count = nodes
        self.use_redis = redis
        self.use_nginx = nginx
        self.node_env = dict(node_env or {})
        self.nginx_port = nginx_port
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="roomcast-cluster-"))
        self.redis: ManagedProcess | None = None
        self.redis_port = 0
        self.nodes: list[NodeProcess] = []
        self.nginx: ManagedProcess | None = None
        self._node_serial = 0

    # Lifecycle

    def start(self) -> LocalCluster:
        try:
            if self.use_redis:
                self.start_redis()
            for _ in range(self.node_count):
                self.start_node()
            if self.use_nginx:
                self.start_nginx()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        for node in self.nodes:
            node.process.stop()
        if self.redis is not None:
            self.redis.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Redis

    @property
    def redis_url(self) -> str | None:
        if not self.use_redis:
            return None
        auth = f":{self.redis_password}@" if self.redis_password else ""
        return f"redis://{auth}127.0.0.1:{self.redis_port}/0"

    def start_redis(self) -> ManagedProcess:
        if self.redis_port == 0:
            self.redis_port = free_port()
        # The password goes in a file only this user reads, never on a command line (where
        # `ps` shows it to every user of the machine).
        config = self.workdir / "redis.conf"
        config.touch(mode=0o600)
        config.write_text(
            f"maxmemory {REDIS_MAXMEMORY}\nmaxmemory-policy {REDIS_MAXMEMORY_POLICY}\n"
            + (f"requirepass {self.redis_password}\n" if self.redis_password else "")
        )
        self.redis = ManagedProcess(
            "redis",
            [
                find_binary("redis-server"),
                str(config),
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--daemonize",
                "no",
                "--loglevel",
                "notice",
            ],
        )
        self.redis.wait_for_line(lambda line: "Ready to accept connections" in line, 20)
        return self.redis

    def kill_redis(self) -> None:
        if self.redis is not None:
            self.redis.signal(signal.SIGKILL)
            self.redis.popen.wait(10)

    # Nodes

    def node_environment(self, node_id: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
        env.update(
            {
                "ROOMCAST_HOST": "127.0.0.1",
                "ROOMCAST_PORT": "0",
                "ROOMCAST_METRICS_PORT": "0",
                "ROOMCAST_NODE_ID": node_id,
                "ROOMCAST_LOG_LEVEL": "INFO",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.redis_url is not None:
            env["ROOMCAST_REDIS_URL"] = self.redis_url
        env.update(self.node_env)
        return env

    def start_node(self, extra_env: Mapping[str, str] | None = None) -> NodeProcess:
        self._node_serial += 1
        node_id = f"node-{self._node_serial}"
        env = self.node_environment(node_id)
        env.update(extra_env or {})
        process = ManagedProcess(node_id, [sys.executable, "-m", "roomcast"], env)
        node = NodeProcess(node_id, process, env=env)
        self.nodes.append(node)
        line = process.wait_for_line(lambda text: '"event":"listening"' in text, 20)
        info = _json_line(line) or {}
        node.port = int(info["port"])
        node.metrics_port = int(info["metrics_port"])
        return node

    # nginx

    @property
    def url(self) -> str:
        """The public WebSocket URL (through nginx when it runs)."""
        if self.use_nginx:
            return f"ws://127.0.0.1:{self.nginx_port}/chat"
        return self.nodes[0].url

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.nginx_port}"

    def start_nginx(self) -> ManagedProcess:
        if self.nginx_port == 0:
            self.nginx_port = free_port()
        prefix = self.workdir / "nginx"
        (prefix / "logs").mkdir(parents=True, exist_ok=True)
        config = prefix / "nginx.conf"
        config.write_text(
            render_nginx_config(self.nginx_port, [n.port for n in self.nodes], prefix)
        )
        binary = find_binary("nginx")
        check = subprocess.run(
            [binary, "-t", "-p", str(prefix), "-c", str(config), "-e", str(prefix / "error.log")],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            raise ClusterError(f"nginx rejected its config:\n{check.stderr}")
        self.nginx = ManagedProcess(
            "nginx",
            [binary, "-p", str(prefix), "-c", str(config), "-e", "stderr"],
        )
        self._await_http(f"{self.http_url}/healthz", self.nginx, 20)
        return self.nginx

    def reload_nginx(self) -> None:
        """Point nginx at the nodes alive now (a rolling update's step) and reload it: SIGHUP
        makes the master start workers with the new config while the old ones finish."""
        assert self.nginx is not None
        prefix = self.workdir / "nginx"
        alive = [n.port for n in self.nodes if n.process.alive()]
        (prefix / "nginx.conf").write_text(render_nginx_config(self.nginx_port, alive, prefix))
        self.nginx.signal(signal.SIGHUP)

    @staticmethod
    def _await_http(url: str, process: ManagedProcess, timeout: float) -> None:
        # nginx prints nothing when it is ready, so ask it; each attempt is one short request.
        deadline = time.monotonic() + timeout * timeout_factor()
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if not process.alive():
                raise ClusterError(f"{process.name} exited:\n{process.tail()}")
            if time.monotonic() > deadline:
                raise ClusterError(f"{process.name} did not answer {url} in time")
            time.sleep(0.05)

    def pids(self) -> dict[str, int]:
        result = {n.node_id: n.process.pid for n in self.nodes if n.process.alive()}
        if self.redis is not None and self.redis.alive():
            result["redis"] = self.redis.pid
        if self.nginx is not None and self.nginx.alive():
            result["nginx"] = self.nginx.pid
        return result


@contextlib.contextmanager
def running_cluster(**kwargs: Any) -> Iterator[LocalCluster]:
    cluster = LocalCluster(**kwargs)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


# Where the launcher puts its nodes and their Redis: its own to choose, whatever the environment.
LAUNCHER_SETTINGS: Final = frozenset(
    env_name(name)
    for name in (
        *("host", "port", "metrics_host", "metrics_port", "node_id"),
        *("redis_url", "redis_mode", "redis_sentinels", "redis_sentinel_master"),
        *("redis_sentinel_username", "redis_sentinel_password"),
    )
)


def operator_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The node settings in ``environ`` (``ROOMCAST_AUTH_SECRET=… make run``) that the nodes
    take as they are: everything but where they listen and which Redis they use."""
    wanted = set(env_names()) - LAUNCHER_SETTINGS - {f"{n}_FILE" for n in LAUNCHER_SETTINGS}
    return {name: value for name, value in environ.items() if name in wanted}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m roomcast_dev.devcluster",
        description="Run redis + N roomcast nodes + nginx on loopback until Ctrl-C.",
    )
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("ROOMCAST_LB_PORT", "8080")),
        help="nginx port on 127.0.0.1 (default 8080, or ROOMCAST_LB_PORT)",
    )
    parser.add_argument("--no-redis", action="store_true", help="single node, in-memory broker")
    args = parser.parse_args(argv)
    nodes = 1 if args.no_redis else args.nodes
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    settings = operator_settings(os.environ)
    cluster = LocalCluster(
        nodes, redis=not args.no_redis, nginx=True, nginx_port=args.port, node_env=settings
    )
    try:
        cluster.start()
    except ClusterError as exc:
        print(f"could not start the cluster: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"roomcast is running: open http://127.0.0.1:{cluster.nginx_port}/")
        print(f"  WebSocket endpoint: {cluster.url}")
        print(f"  HTTP API: {cluster.http_url}/api/ (OpenAPI: {cluster.http_url}/api/openapi.json)")
        if cluster.redis is not None:
            print(f"  redis:   {cluster.redis_url}  (pid {cluster.redis.pid})")
        for node in cluster.nodes:
            print(
                f"  {node.node_id}: {node.url}  metrics {node.metrics_url}/metrics"
                f"  (pid {node.process.pid})"
            )
        if settings:
            print(f"  the nodes' settings from the environment: {', '.join(sorted(settings))}")
        print("Press Ctrl-C to stop.", flush=True)
        return _watch(cluster, stop)
    finally:
        print("stopping…", flush=True)
        cluster.stop()


def _watch(cluster: LocalCluster, stop: threading.Event) -> int:
    """Until Ctrl-C. A node that exits is reported and the others carry on: killing one (the
    quickstart's demonstration) shows its clients moving to another through nginx. Redis or nginx
    exiting, or the last node, ends the run (1)."""
    reported: set[str] = set()
    while not stop.wait(1.0):
        for node in cluster.nodes:
            process = node.process
            if node.node_id in reported or process.alive():
                continue
            reported.add(node.node_id)
            code = process.popen.returncode
            # A crash (a positive status) shows its last lines; a kill is what was asked for.
            tail = f"\n{process.tail()}" if code is not None and code > 0 else ""
            print(
                f"{node.node_id} (pid {process.pid}) exited ({code}); the other nodes go on{tail}",
                file=sys.stderr,
                flush=True,
            )
        if len(reported) == len(cluster.nodes):
            print("every node exited", file=sys.stderr, flush=True)
            return 1
        for name, service in (("redis", cluster.redis), ("nginx", cluster.nginx)):
            if service is not None and not service.alive():
                print(f"{name} exited:\n{service.tail()}", file=sys.stderr, flush=True)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
