"""The systems under test: roomcast's LocalCluster, the article's Node server as the same shape
(redis-server + N node processes + nginx, reusing devcluster's helpers), or a running deployment.

Every process is started here and stopped here by PID (LocalCluster.stop).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from roomcast_dev.devcluster import SHARED_LIMITS_OFF, LocalCluster, ManagedProcess, NodeProcess

from roomcast_bench.procstat import with_children

BENCH_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = BENCH_DIR.parent
BASELINE_DIR = BENCH_DIR / "baseline"
BASELINE_SERVER = BASELINE_DIR / "server.js"

# The benchmark measures throughput, not roomcast's per-client flood protection (50 frames/s,
# burst 100, and 10 messages/s, burst 20, by default): publishers send far more than a chat user
# would. Revisions without one of these settings ignore it.
ROOMCAST_BENCH_ENV: Mapping[str, str] = {
    "ROOMCAST_RATE_LIMIT_PER_SECOND": "1000000",
    "ROOMCAST_RATE_LIMIT_BURST": "1000000",
    "ROOMCAST_MESSAGE_RATE_PER_SECOND": "1000000",
    "ROOMCAST_MESSAGE_RATE_BURST": "1000000",
    # Issue 15's client, room and join limits: a benchmark is one client sending a lot.
    **SHARED_LIMITS_OFF,
}
# Handshake admission (node-wide and per address): the idle and connect scenarios measure
# setup cost at full speed; the storm scenario measures admission itself, with the nodes'
# defaults (its clients come from 127.0.x.y, 200 per address: within an address's burst).
ADMISSION_OFF: Mapping[str, str] = {
    "ROOMCAST_ADMISSION_RATE_PER_SECOND": "1000000000",
    "ROOMCAST_ADMISSION_BURST": "1000000000",
    "ROOMCAST_ADMISSION_PER_ADDRESS_RATE_PER_SECOND": "1000000000",
    "ROOMCAST_ADMISSION_PER_ADDRESS_BURST": "1000000000",
}


def baseline_unavailable() -> str | None:
    """Why the Node baseline cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node (Node.js) is not installed: the baseline needs node >= 20 and npm"
    if (
        not (BASELINE_DIR / "node_modules" / "ws").is_dir()
        or not (BASELINE_DIR / "node_modules" / "redis").is_dir()
    ):
        return (
            "bench/baseline/node_modules is missing: run `npm ci` in bench/baseline "
            "(make bench does it)"
        )
    try:
        version = subprocess.run(
            ["node", "--version"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"node --version failed: {exc}"
    major = int(version.lstrip("v").split(".")[0] or 0)
    if major < 20:
        return f"node {version} is too old: the baseline's redis client needs node >= 20"
    return None


class BaselineCluster(LocalCluster):
    """redis-server + N article servers (node bench/baseline/server.js) + nginx."""

    def start_node(self, extra_env: Mapping[str, str] | None = None) -> NodeProcess:
        self._node_serial += 1
        node_id = f"baseline-{self._node_serial}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
        env.update(
            {
                "HOST": "127.0.0.1",
                "PORT": "0",
                "NODE_ID": node_id,
                "REDIS_URL": self.redis_url or "",
                "NODE_ENV": "production",
            }
        )
        env.update(extra_env or {})
        node_binary = shutil.which("node") or "node"
        process = ManagedProcess(node_id, [node_binary, str(BASELINE_SERVER)], env)
        node = NodeProcess(node_id, process, env=env)
        self.nodes.append(node)
        line = process.wait_for_line(lambda text: '"event":"listening"' in text, 20)
        node.port = int(orjson.loads(line)["port"])
        return node


@dataclass
class System:
    """What a scenario needs from a system: where to connect, and which PIDs to measure."""

    name: str
    node_urls: list[str]
    nginx_url: str | None
    pid_groups: dict[str, list[int]] = field(default_factory=dict)
    cluster: LocalCluster | None = None

    def url_for(self, via: str, index: int) -> str:
        if via == "nginx":
            if self.nginx_url is None:
                raise ValueError(f"{self.name}: no nginx URL to go through")
            return self.nginx_url
        return self.node_urls[index % len(self.node_urls)]

    @property
    def node_pids(self) -> list[int]:
        return self.pid_groups.get("nodes", [])

    def refresh_pids(self) -> None:
        """nginx workers are found through /proc children of the master, once it runs."""
        if self.cluster is not None and self.cluster.nginx is not None:
            self.pid_groups["nginx"] = with_children(self.cluster.nginx.pid)

    def alive(self) -> list[str]:
        if self.cluster is None:
            return []
        return [n.node_id for n in self.cluster.nodes if not n.process.alive()]

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None


def roomcast_source(rev: str, into: Path) -> Path:
    """Export ``node/`` of git revision ``rev`` into ``into``; nodes then run that code."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", "--format=tar", rev, "node"],
        capture_output=True, check=False,
    )  # fmt: skip
    if archive.returncode != 0:
        raise ValueError(f"--roomcast-rev {rev!r}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "node"


def git_describe(rev: str | None) -> dict[str, object]:
    def git(*argv: str) -> str:
        try:
            out = subprocess.run(
                ["git", "-C", str(REPO_ROOT), *argv], capture_output=True, text=True, check=False
            )
        except OSError:
            return ""
        return out.stdout.strip()

    info: dict[str, object] = {"commit": git("rev-parse", rev or "HEAD")}
    if rev is None:
        info["node_dirty"] = bool(git("status", "--porcelain", "--", "node"))
    else:
        info["rev"] = rev
    return info


def start_system(
    name: str,
    nodes: int = 3,
    roomcast_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    *,
    nginx: bool = True,
    admission: bool = False,
) -> System:
    """``env``: more settings for roomcast's nodes (the baseline has none). ``admission``: keep
    the nodes' default handshake admission (the storm measures it)."""
    cluster: LocalCluster
    if name == "roomcast":
        env = {**ROOMCAST_BENCH_ENV, **({} if admission else ADMISSION_OFF), **(env or {})}
        if roomcast_path is not None:
            # Before the venv's editable install on sys.path: the nodes run the exported code.
            env["PYTHONPATH"] = str(roomcast_path)
        cluster = LocalCluster(nodes, redis=True, nginx=nginx, node_env=env)
    elif name == "baseline":
        cluster = BaselineCluster(nodes, redis=True, nginx=nginx)
    else:
        raise ValueError(f"unknown system {name!r}")
    cluster.start()
    system = System(
        name=name,
        node_urls=[n.url for n in cluster.nodes],
        nginx_url=cluster.url if cluster.use_nginx else None,
        pid_groups={
            "nodes": [n.process.pid for n in cluster.nodes],
            "redis": [cluster.redis.pid] if cluster.redis is not None else [],
        },
        cluster=cluster,
    )
    system.refresh_pids()
    return system


def remote_system(url: str, pids: Mapping[str, list[int]] | None = None) -> System:
    """A deployment already running on this machine; CPU figures only for the PIDs given."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("ws", "http") or not parsed.hostname:
        raise ValueError(f"--url {url!r}: expected ws://HOST:PORT/chat")
    host = parsed.hostname
    loopback = host == "localhost"
    if not loopback:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
    if not loopback:
        raise ValueError(f"--url {url!r}: the benchmark only sends load to loopback addresses")
    if parsed.scheme == "http":
        url = "ws" + url[4:]
    return System(name="target", node_urls=[url], nginx_url=url, pid_groups=dict(pids or {}))
