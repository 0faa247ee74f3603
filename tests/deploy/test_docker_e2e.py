"""End to end with Docker: `docker-compose up --build --scale node=3` of the shipped
docker-compose.yml, exercised only through ports published on 127.0.0.1.

- 30+ connections through nginx land on the 3 replicas (per their welcome frames);
- users on two replicas share a room;
- Prometheus (its HTTP API) reports the 3 replicas as healthy targets;
- `--scale node=4`: the new replica gets connections and becomes a target, without restarts;
- `docker kill` of a replica: its clients reconnect through nginx to the others, keep chatting;
- `down -v` removes every container, network and volume of the project, also on failure.

The Docker engine comes from ../shared/docker/engine.sh and the base images from
../shared/docker/standins.sh (this machine reaches no registry; ROOMCAST_E2E_OFFICIAL_IMAGES=1
uses the compose file's official images instead). The test is skipped, with the reason, only when
no engine can be started. Run it with `make test-docker`.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from roomcast_dev.devcluster import timeout_factor

from roomcast.broker.cluster_slots import slot_of
from tests.support.httpclient import EventStream, request
from tests.support.paths import REPO
from tests.support.wsclient import Client

pytestmark = [pytest.mark.docker_e2e, pytest.mark.timeout(900)]

# ../shared/docker beside the checkout (CI lays shared/ there too); overridable for other layouts.
SHARED_DOCKER = Path(os.environ.get("ROOMCAST_SHARED_DOCKER", REPO.parent / "shared" / "docker"))
ENGINE_SH = SHARED_DOCKER / "engine.sh"
STANDINS_SH = SHARED_DOCKER / "standins.sh"
PROMETHEUS_STANDIN = "local/prometheus-standin:latest"
PROMETHEUS_STANDIN_DOCKERFILE = Path(__file__).parent / "standins" / "prometheus.Dockerfile"
# Built by the test from node/Dockerfile on the stand-in python; kept between runs as the build
# cache (a name of its own, so it is never mistaken for an image built on the official python).
NODE_IMAGE = "roomcast-e2e/node:latest"
COMPOSE_FILES = ["docker-compose.yml", "observability/compose.prometheus-port.yml"]


def log(message: str) -> None:
    print(f"[docker-e2e {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def scaled(seconds: float) -> float:
    return seconds * timeout_factor()


def docker_binary() -> str:
    # Debian's client talks to Debian's engine (shared/docker/README.md).
    if Path("/usr/bin/docker").exists():
        return "/usr/bin/docker"
    return shutil.which("docker") or "docker"


def run(
    args: list[str], timeout: float, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 3) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def wait_until(what: str, check: Any, timeout: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + scaled(timeout)
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {scaled(timeout):.0f} s waiting for {what} (last: {last!r})"
    )


# --- engine and images ------------------------------------------------------------------------


def start_engine() -> str:
    """A Docker engine answering, or pytest.skip with the reason."""
    docker = docker_binary()
    if shutil.which(docker) and run([docker, "info"], 30, check=False).returncode == 0:
        return docker
    if not ENGINE_SH.exists():
        pytest.skip(f"no Docker engine answers and {ENGINE_SH} (which starts one) is missing")
    log(f"starting a Docker engine with {ENGINE_SH}")
    result = run(["bash", str(ENGINE_SH)], 600, check=False)
    if result.returncode != 0:
        pytest.skip(
            f"no Docker engine could be started: {ENGINE_SH} exited {result.returncode}: "
            + (result.stderr.strip() or result.stdout.strip())[-1500:]
        )
    docker = docker_binary()
    if run([docker, "info"], 30, check=False).returncode != 0:
        pytest.skip(f"{ENGINE_SH} succeeded but `{docker} info` still fails")
    if shutil.which("docker-compose") is None:
        pytest.skip("the Docker engine runs but docker-compose is not installed")
    return docker


def image_variables(docker: str) -> dict[str, str]:
    """The compose file's image variables: local stand-ins, or nothing (official images)."""
    if os.environ.get("ROOMCAST_E2E_OFFICIAL_IMAGES") == "1":
        log("ROOMCAST_E2E_OFFICIAL_IMAGES=1: using the compose file's official images")
        return {}
    if not STANDINS_SH.exists():
        # No registry is reachable here, so without stand-ins no image can be had at all.
        pytest.skip(
            f"{STANDINS_SH} is missing: no stand-in images can be built and the official "
            "images cannot be pulled (set ROOMCAST_SHARED_DOCKER or ROOMCAST_E2E_OFFICIAL_IMAGES=1)"
        )
    started = time.monotonic()
    result = run(["bash", str(STANDINS_SH)], 900)
    variables = dict(line.split("=", 1) for line in result.stdout.split() if "=" in line)
    assert {"PYTHON_IMAGE", "REDIS_IMAGE", "NGINX_IMAGE"} <= variables.keys(), result.stdout
    run(
        [docker, "build", "-q", "-t", PROMETHEUS_STANDIN, "-f", str(PROMETHEUS_STANDIN_DOCKERFILE),
         str(PROMETHEUS_STANDIN_DOCKERFILE.parent)],
        900,
    )  # fmt: skip
    variables["PROMETHEUS_IMAGE"] = PROMETHEUS_STANDIN
    log(f"stand-in images ready in {time.monotonic() - started:.1f} s: {variables}")
    return variables


# --- the stack ----------------------------------------------------------------------------------


@dataclass
class Replica:
    id: str
    hostname: str  # the node id in welcome frames (ROOMCAST_NODE_ID defaults to the host name)
    ip: str
    health: str
    running: bool


@dataclass
class Stack:
    docker: str
    project: str
    env: dict[str, str]
    lb_port: int
    prometheus_port: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.lb_port}/chat"

    @property
    def prometheus(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        files = [x for f in COMPOSE_FILES for x in ("-f", f)]
        command = ["docker-compose", "-p", self.project, *files, *args]
        return run(command, timeout, env=self.env, check=check).stdout

    def replicas(self, include_stopped: bool = False) -> list[Replica]:
        ids = run(
            [self.docker, "ps", "-q", *(["-a"] if include_stopped else []),
             "--filter", f"label=com.docker.compose.project={self.project}",
             "--filter", "label=com.docker.compose.service=node"],
            60,
        ).stdout.split()  # fmt: skip
        if not ids:
            return []
        result = []
        for info in json.loads(run([self.docker, "inspect", *ids], 60).stdout):
            networks = info["NetworkSettings"]["Networks"]
            ip = next(iter(networks.values()))["IPAddress"] if networks else ""
            health = info["State"].get("Health", {}).get("Status", "none")
            result.append(
                Replica(
                    info["Id"], info["Config"]["Hostname"], ip, health, info["State"]["Running"]
                )
            )
        return result

    def healthy_replicas(self) -> list[Replica]:
        return [r for r in self.replicas() if r.running and r.health == "healthy"]

    def prometheus_node_targets(self) -> dict[str, str]:
        """instance address (ip:port) → health, of the roomcast-node job's active targets."""
        status, body = http_get(f"{self.prometheus}/api/v1/targets?state=active")
        if status != 200:
            return {}
        targets = json.loads(body)["data"]["activeTargets"]
        return {
            t["labels"]["instance"]: t["health"]
            for t in targets
            if t["labels"].get("job") == "roomcast-node"
        }

    def leftovers(self) -> dict[str, list[str]]:
        label = f"label=com.docker.compose.project={self.project}"
        return {
            kind: run(command, 60).stdout.split()
            for kind, command in {
                "containers": [self.docker, "ps", "-aq", "--filter", label],
                "networks": [self.docker, "network", "ls", "-q", "--filter", label],
                "volumes": [self.docker, "volume", "ls", "-q", "--filter", label],
            }.items()
        }


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    started = time.monotonic()
    docker = start_engine()
    images = image_variables(docker)
    project = f"roomcast-e2e-{secrets.token_hex(4)}"
    lb_port, prometheus_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROOMCAST_", "COMPOSE_"))}
    env.update(images)
    env.update({
        "ROOMCAST_NODE_IMAGE": NODE_IMAGE,
        "ROOMCAST_LB_ADDRESS": "127.0.0.1",
        "ROOMCAST_LB_PORT": str(lb_port),
        "ROOMCAST_PROMETHEUS_PORT": str(prometheus_port),
        "ROOMCAST_REDIS_PASSWORD": secrets.token_hex(16),  # compose requires one (no default)
        "DOCKER_BUILDKIT": "0",
    })  # fmt: skip
    stack = Stack(docker, project, env, lb_port, prometheus_port)
    stack.timings["engine and images"] = time.monotonic() - started
    failures_before = request.session.testsfailed
    log(f"project {project}: load balancer on 127.0.0.1:{lb_port}, "
        f"Prometheus on 127.0.0.1:{prometheus_port}")  # fmt: skip
    ready = False
    try:
        phase = time.monotonic()
        stack.compose("up", "-d", "--build", "--scale", "node=3", timeout=900)
        wait_until("3 healthy node replicas", lambda: len(stack.healthy_replicas()) == 3, 90)
        wait_until(
            "nginx /healthz", lambda: http_get(f"http://127.0.0.1:{lb_port}/healthz")[0] == 200, 60
        )
        wait_until(
            "Prometheus ready", lambda: http_get(f"{stack.prometheus}/-/ready")[0] == 200, 60
        )
        stack.timings["up --build --scale node=3"] = time.monotonic() - phase
        size = run([docker, "image", "inspect", "-f", "{{.Size}}", NODE_IMAGE], 60).stdout.strip()
        log(f"stack up in {stack.timings['up --build --scale node=3']:.1f} s; "
            f"node image {NODE_IMAGE}: {int(size) / 1e6:.1f} MB")  # fmt: skip
        ready = True
        yield stack
    finally:
        if not ready or request.session.testsfailed > failures_before:
            logs = stack.compose("logs", "--no-color", "--tail", "40", timeout=120, check=False)
            log(f"the stack failed; its last log lines:\n{logs}")
        phase = time.monotonic()
        stack.compose("down", "-v", "--remove-orphans", "-t", "20", timeout=300, check=False)
        stack.timings["down -v"] = time.monotonic() - phase
        leftovers = stack.leftovers()
        total = time.monotonic() - started
        log("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in stack.timings.items())
            + f"; total {total:.1f} s")  # fmt: skip
        if any(leftovers.values()):
            pytest.fail(f"`down -v` left things behind: {leftovers}")
        log(f"down -v removed every container, network and volume of {project}")


# --- the tests ----------------------------------------------------------------------------------


async def connect_many(url: str, count: int) -> list[Client]:
    clients = []
    for _ in range(count):
        clients.append(await Client.connect(url))
    return clients


async def close_all(clients: list[Client]) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def test_connections_spread_over_the_three_replicas(stack: Stack) -> None:
    replicas = stack.healthy_replicas()
    assert len(replicas) == 3
    clients = await connect_many(stack.url, 36)
    try:
        per_node = Counter(c.node for c in clients)
        log(f"36 connections through nginx: {dict(per_node)}")
        assert set(per_node) == {r.hostname for r in replicas}, (
            "every replica (by its welcome frame's node id) must get connections"
        )
    finally:
        await close_all(clients)


async def on_distinct_nodes(url: str, count: int, avoid: set[str] = frozenset(),  # type: ignore[assignment]
                            attempts: int = 60) -> list[Client]:  # fmt: skip
    chosen: dict[str, Client] = {}
    extra: list[Client] = []
    for _ in range(attempts):
        client = await Client.connect(url)
        if client.node in chosen or client.node in avoid:
            extra.append(client)
        else:
            chosen[client.node] = client
        if len(chosen) == count:
            break
    await close_all(extra)
    assert len(chosen) == count, f"reached only {sorted(chosen)}"
    return list(chosen.values())


async def chat_round(clients: list[Client], room: str) -> None:
    """Every client says something; every client hears everyone (all members, all replicas)."""
    for index, client in enumerate(clients):
        await client.send(type="message", room=room, text=f"hello from {index} on {client.node}")
    for client in clients:
        for index, sender in enumerate(clients):
            event = await client.recv_type(
                "message", timeout=15, room=room, text=f"hello from {index} on {sender.node}"
            )
            assert event["username"] == f"user{index}"


async def test_users_on_different_replicas_share_a_room(stack: Stack) -> None:
    alice, bob = await on_distinct_nodes(stack.url, 2)
    room = f"e2e-{secrets.token_hex(3)}"
    try:
        await alice.join(room, "user0")
        await bob.join(room, "user1")
        await chat_round([alice, bob], room)
        log(f"chat across replicas {alice.node} and {bob.node}: ok")
    finally:
        await close_all([alice, bob])


async def test_http_api_and_event_stream_through_the_compose_nginx(stack: Stack) -> None:
    """/api/ through the compose nginx: a published message reaches WebSocket members on other
    replicas and an event-stream consumer (unbuffered, so it arrives before the stream ends)."""
    base = f"http://127.0.0.1:{stack.lb_port}/api/rooms"
    room = f"e2e-{secrets.token_hex(3)}"
    alice, bob = await on_distinct_nodes(stack.url, 2)
    stream = await EventStream.open(f"{base}/{room}/events")
    try:
        assert stream.status == 200 and stream.node
        await stream.next_type("joined")
        await alice.join(room, "user0")
        await bob.join(room, "user1")
        posted = await request(
            "POST", f"{base}/{room}/messages", json_body={"text": "from ci", "username": "ci"}
        )
        assert posted.status == 201, posted.body
        for member in (alice, bob):
            assert (await member.recv_type("message", timeout=15))["text"] == "from ci"
        event = await stream.next_type("message", timeout=15)
        assert (event.id, event.data["text"]) == (posted.json()["offset"], "from ci")
        history = await request("GET", f"{base}/{room}/history")
        assert [m["text"] for m in history.json()["messages"]] == ["from ci"]
        log(f"HTTP API via nginx: published at offset {event.id}, streamed by {stream.node}")
    finally:
        stream.close()
        await close_all([alice, bob])


def test_prometheus_reports_three_healthy_node_targets(stack: Stack) -> None:
    wanted = {f"{r.ip}:9000" for r in stack.healthy_replicas()}
    assert len(wanted) == 3
    targets = wait_until(
        "3 healthy node targets in Prometheus",
        lambda: (t := stack.prometheus_node_targets()) and set(t) == wanted
        and all(h == "up" for h in t.values()) and t,
        60,
    )  # fmt: skip
    status, body = http_get(
        f"{stack.prometheus}/api/v1/query?query="
        + urllib.parse.quote('sum(up{job="roomcast-node"})')
    )
    assert status == 200
    assert float(json.loads(body)["data"]["result"][0]["value"][1]) == 3
    log(f"Prometheus targets: {targets}")


async def test_scale_to_four_gets_connections_and_a_target(stack: Stack) -> None:
    before = {r.id for r in stack.replicas()}
    phase = time.monotonic()
    stack.compose("up", "-d", "--no-recreate", "--scale", "node=4", timeout=300)
    replicas = wait_until(
        "4 healthy replicas", lambda: (r := stack.healthy_replicas()) and len(r) == 4 and r, 90
    )
    assert {r.id for r in replicas} > before, "the 3 first replicas were kept"
    (new,) = [r for r in replicas if r.id not in before]

    # nginx re-resolves `node` every 5 s: new connections reach the new replica, no reload
    clients: list[Client] = []
    try:
        deadline = time.monotonic() + scaled(45)
        while not any(c.node == new.hostname for c in clients):
            assert time.monotonic() < deadline, (
                f"no connection reached the new replica {new.hostname} among {len(clients)}: "
                f"{dict(Counter(c.node for c in clients))}"
            )
            batch = await connect_many(stack.url, 10)
            clients.extend(batch)
            await asyncio.sleep(0.5)
        stack.timings["scale to 4 until a connection lands on it"] = time.monotonic() - phase
        log(f"scaled to 4: new replica {new.hostname} reached after {len(clients)} connections")
        # ... and takes part in the chat like the others
        on_new = next(c for c in clients if c.node == new.hostname)
        on_old = next(c for c in clients if c.node != new.hostname)
        room = f"e2e-{secrets.token_hex(3)}"
        await on_new.join(room, "user0")
        await on_old.join(room, "user1")
        await chat_round([on_new, on_old], room)
    finally:
        await close_all(clients)

    wanted = {f"{r.ip}:9000" for r in replicas}
    wait_until(
        "the new replica as a healthy Prometheus target",
        lambda: (t := stack.prometheus_node_targets()) and set(t) == wanted
        and all(h == "up" for h in t.values()),
        60,
    )  # fmt: skip
    stack.timings["scale to 4 until Prometheus scrapes it"] = time.monotonic() - phase


async def test_killed_replica_clients_reconnect_and_keep_chatting(stack: Stack) -> None:
    replicas = stack.healthy_replicas()
    assert len(replicas) >= 2
    clients = await connect_many(stack.url, 12 * len(replicas))
    per_node = Counter(c.node for c in clients)
    victim_node, _ = per_node.most_common(1)[0]
    victims = [c for c in clients if c.node == victim_node][:4]
    observer = next(c for c in clients if c.node != victim_node)
    await close_all([c for c in clients if c not in victims and c is not observer])
    (victim,) = [r for r in replicas if r.hostname == victim_node]
    room = f"e2e-{secrets.token_hex(3)}"
    members = [observer, *victims]
    try:
        for index, member in enumerate(members):
            await member.join(room, f"user{index}")
        await chat_round(members, room)

        run([stack.docker, "kill", victim.id], 60)
        killed_at = time.monotonic()
        log(f"docker kill {victim.hostname}: {len(victims)} of its clients in room {room}")
        for client in victims:
            await client.expect_close(timeout=15)
        # each client reconnects through nginx (a dead address may stay in nginx's DNS cache for
        # 5 s: the 2 s connect timeout and next-upstream must hide it) and rejoins
        reconnect_times = []
        survivors = [observer]
        for index, _ in enumerate(victims, start=1):
            started = time.monotonic()
            client = await Client.connect(stack.url)
            reconnect_times.append(time.monotonic() - started)
            assert client.node != victim_node, "nginx sent a client to the killed replica"
            await client.join(room, f"user{index}")
            survivors.append(client)
        log(f"reconnected {len(victims)} clients in {time.monotonic() - killed_at:.1f} s "
            f"(slowest handshake {max(reconnect_times):.2f} s) to "
            f"{sorted({c.node for c in survivors[1:]})}")  # fmt: skip
        assert max(reconnect_times) < scaled(8), reconnect_times
        await chat_round(survivors, room)
        # a killed replica stays down (docker kill is a manual stop for the restart policy)
        assert not next(
            r for r in stack.replicas(include_stopped=True) if r.id == victim.id
        ).running
        members = survivors
    finally:
        await close_all(members + victims)


async def test_stop_drains_every_replica_and_exits_0(stack: Stack) -> None:
    """The node is PID 1 in its container and handles SIGTERM itself: `docker-compose stop`
    closes its clients with 1001 (they reconnect elsewhere) and it exits 0, well before the
    stop_grace_period would SIGKILL it."""
    running = [r for r in stack.replicas() if r.running]
    client = await Client.connect(stack.url)
    started = time.monotonic()
    stop = asyncio.create_task(asyncio.to_thread(stack.compose, "stop", "-t", "15", "node"))
    try:
        code, _ = await client.expect_close(timeout=20)
    finally:
        await stop
    elapsed = time.monotonic() - started
    assert code == 1001, f"closed with {code}, not 1001 (going away)"
    codes = {
        r.hostname: json.loads(run([stack.docker, "inspect", r.id], 60).stdout)[0]["State"][
            "ExitCode"
        ]
        for r in running
    }
    log(f"compose stop of {len(running)} replicas: {elapsed:.1f} s, exit codes {codes}")
    assert set(codes.values()) == {0}, codes
    assert elapsed < 14, "a replica waited for the SIGKILL"


# --- the "cluster" profile: the same nodes on a 3-primary Redis Cluster ---------------------

CLUSTER_SERVICES = (
    "redis-cluster-1", "redis-cluster-2", "redis-cluster-3", "redis-cluster-init",
    "node-cluster", "loadbalancer-cluster",
)  # fmt: skip


def rooms_in_every_third_of_the_slots(per_third: int) -> list[str]:
    """Room names whose slots fall in each third of 0-16383: `redis-cli --cluster create`
    gives each of the 3 primaries one third, so every shard gets rooms."""
    wanted: dict[int, list[str]] = {0: [], 1: [], 2: []}
    while any(len(rooms) < per_third for rooms in wanted.values()):
        room = f"e2e-shard-{secrets.token_hex(3)}"
        third = min(2, slot_of(room.encode()) * 3 // 16384)
        if len(wanted[third]) < per_third:
            wanted[third].append(room)
    return [room for rooms in wanted.values() for room in rooms]


def restart_shard(stack: Stack, service: str) -> list[str]:
    """Restarts ``service``'s Redis; returns the channels it serves, once it is the same
    cluster node again, with its slots, and the nodes subscribed there as before."""
    (container,) = stack.compose("--profile", "cluster", "ps", "-q", service).split()

    def cli(*args: str) -> str:
        command = [stack.docker, "exec", container, "redis-cli", "--no-auth-warning", *args]
        return run(command, 60, check=False).stdout

    def channels() -> set[str]:
        return set(cli("PUBSUB", "SHARDCHANNELS", "rc:{e2e-shard-*").split())

    before, identity = channels(), cli("CLUSTER", "MYID").strip()
    run([stack.docker, "restart", "-t", "10", container], 120)
    wait_until(
        "the restarted shard's cluster_state:ok", lambda: "state:ok" in cli("CLUSTER", "INFO"), 60
    )
    assert cli("CLUSTER", "MYID").strip() == identity  # the same node, not a new empty one
    assert "cluster_slots_ok:16384" in cli("CLUSTER", "INFO")
    wait_until("the nodes' subscriptions on the restarted shard", lambda: channels() == before, 60)
    return sorted(before)


async def restarted_shard_keeps_its_rooms(stack: Stack, clients: list[Client]) -> None:
    """A shard's Redis restarted (crash, OOM kill, dockerd restart) comes back as the same
    cluster node with its slots, since its nodes.conf is on a volume: on a tmpfs it came back as
    a new node without slots, and its third of the rooms failed until the cluster was made
    again. The nodes subscribe its rooms again, and the rooms carry chat."""
    # In a thread: the clients must keep answering the nodes' pings meanwhile (a client silent
    # for a ping interval, 30 s, is closed as dead, and its rooms with it).
    channels = await asyncio.to_thread(restart_shard, stack, "redis-cluster-2")
    for channel in channels:
        await chat_round(clients, channel.partition("{")[2].partition("}")[0])
    log(f"redis-cluster-2 restarted as the same cluster node; its {len(channels)} rooms chat")


async def test_cluster_profile_spreads_rooms_over_three_shards() -> None:
    """`docker-compose --profile cluster up`: 3 nodes in cluster mode behind their own nginx;
    rooms land on every shard (sharded pub/sub channels, one shard each), chat and the HTTP API
    work across replicas, and `down -v` leaves nothing."""
    started = time.monotonic()
    docker = start_engine()
    project = f"roomcast-e2e-cluster-{secrets.token_hex(3)}"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROOMCAST_", "COMPOSE_"))}
    env.update(image_variables(docker))
    env.update({
        "ROOMCAST_NODE_IMAGE": NODE_IMAGE,
        "ROOMCAST_LB_ADDRESS": "127.0.0.1",
        "ROOMCAST_CLUSTER_LB_PORT": str(port),
        "ROOMCAST_REDIS_PASSWORD": secrets.token_hex(16),
        "DOCKER_BUILDKIT": "0",
    })  # fmt: skip
    stack = Stack(docker, project, env, port, 0)
    profile = ("--profile", "cluster")
    try:
        stack.compose(*profile, "up", "-d", "--build", "--scale", "node-cluster=3",
                      *CLUSTER_SERVICES, timeout=900)  # fmt: skip
        wait_until(
            "cluster nginx /healthz",
            lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200,
            90,
        )
        log(f"cluster profile up in {time.monotonic() - started:.1f} s")
        clients = await on_distinct_nodes(stack.url, 2)
        rooms = rooms_in_every_third_of_the_slots(3)
        try:
            for room in rooms:
                for index, client in enumerate(clients):
                    await client.join(room, f"user{index}")
                await chat_round(clients, room)
            posted = await request(
                "POST", f"http://127.0.0.1:{port}/api/rooms/{rooms[0]}/messages",
                json_body={"text": "via http", "username": "ci"},
            )  # fmt: skip
            assert posted.status == 201, posted.body
            for client in clients:
                await client.recv_type("message", timeout=15, room=rooms[0], text="via http")
            # Each room's sharded channel lives on exactly one shard (while its members are
            # on), and every shard has some.
            per_shard: dict[str, set[str]] = {}
            for service in CLUSTER_SERVICES[:3]:
                (container,) = stack.compose(*profile, "ps", "-q", service).split()
                listed = run(
                    [docker, "exec", container, "redis-cli", "--no-auth-warning",
                     "PUBSUB", "SHARDCHANNELS", "rc:{e2e-shard-*"], 60,
                ).stdout.split()  # fmt: skip
                per_shard[service] = set(listed)
            log(f"rooms per shard: { {k: len(v) for k, v in per_shard.items()} }")
            assert all(per_shard.values()), per_shard
            assert sum(len(v) for v in per_shard.values()) == len(rooms)
            await restarted_shard_keeps_its_rooms(stack, clients)
        finally:
            await close_all(clients)
    finally:
        stack.compose(*profile, "down", "-v", "--remove-orphans", "-t", "20",
                      timeout=300, check=False)  # fmt: skip
    assert not any(stack.leftovers().values()), stack.leftovers()
