"""How many node processes, machines, nginx cores and Redis shards a deployment needs, from the
unit costs the benchmark measured (docs/capacity.md). Pure arithmetic: no I/O, no server code.

Each resource is sized by every constraint that applies to it, separately; the answer is the
largest, and the constraint that asked for it is named (it "binds"):

- node processes (one event loop each, so at most one core each): steady CPU within
  ``cpu_target`` of a core; steady CPU plus a reconnect storm (one node lost, its clients back
  on the others within ``storm_seconds``) within a whole core; the connections held after
  losing one node within the memory share and the file descriptors of a process;
- nginx: the same two CPU figures, in cores;
- Redis shards (one core each): steady and storm CPU as for nodes; memory within
  ``shard_memory_bytes``. Rooms spread over shards by hash slot (sharded pub/sub), so a shard
  carries its share of the rooms; one room never spans shards.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

__all__ = [
    "Constraint",
    "Cores",
    "Deployment",
    "Plan",
    "Sized",
    "UnitCosts",
    "plan",
    "render",
    "steady_cores",
    "subscribing_nodes",
]

KIB = 1024
GIB = 1024**3
FD_RESERVE = 256  # a node's own descriptors: listeners, Redis links, logs, metrics clients
MAX_COUNT = 1 << 24  # no deployment is sized beyond this many of anything


@dataclass(frozen=True, slots=True)
class UnitCosts:
    """What one unit of work costs, as measured (µs of CPU, bytes or KiB of memory)."""

    # Node CPU per message, split (bench/unit_costs.py): the sender's node takes it in and
    # runs the publish script (ingest), each node with members receives it from its Redis
    # subscription (receive), and it is written once per member (delivery).
    node_us_per_ingest: float
    node_us_per_receive: float
    node_us_per_delivery: float
    node_us_per_setup: float  # handshake + join (make bench, connect)
    node_kib_per_connection: float  # RSS of an idle joined connection (make bench, idle)
    node_base_kib: float  # RSS of a node holding nothing
    nginx_us_per_delivery: float  # make bench, fanout through nginx
    nginx_us_per_setup: float
    nginx_kib_per_connection: float
    redis_us_per_message: float  # the publish script and its own bookkeeping
    redis_us_per_receive: float  # each subscribing node the message is sent to
    redis_us_per_setup: float
    redis_history_bytes_per_message: float  # on top of the message text's own bytes
    redis_room_bytes: float  # a room's offset counter, epoch, byte count, empty presence hash
    redis_presence_bytes_per_member: float

    @classmethod
    def from_mapping(cls, values: dict[str, float]) -> UnitCosts:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        missing = sorted(names - set(values))
        if unknown or missing:
            raise ValueError(f"unit costs: unknown {unknown}, missing {missing}")
        bad = sorted(k for k, v in values.items() if not (math.isfinite(v) and v >= 0))
        if bad:
            raise ValueError(f"unit costs must be finite and >= 0: {bad}")
        return cls(**{k: float(v) for k, v in values.items()})


@dataclass(frozen=True, slots=True)
class Deployment:
    """The load to carry and the machines to carry it on."""

    connections: int
    rooms: int
    messages_per_second: float
    room_size: float | None = None  # mean members per room; default connections / rooms
    deliveries_per_second: float | None = None  # default messages/s x room size
    # Nodes a room's members are on; default: placed at random by the balancer (see
    # subscribing_nodes). 1 when the balancer keeps each room on one node.
    nodes_per_room: float | None = None
    message_bytes: int = 100  # a message's text
    # History (ROOMCAST_HISTORY_SIZE, _TTL, _BYTES): what Redis keeps per room.
    history_size: int = 100
    history_ttl: float = 600.0
    history_bytes: int = 2 * 1024 * 1024
    # Churn: a connection lives this long on average, then reconnects.
    session_seconds: float = 1800.0
    storm_seconds: float = 60.0  # a lost node's clients are back on the others within this
    # Machines
    cpu_target: float = 0.6  # of a core, in steady state: room for bursts and a lost node
    cores_per_machine: int = 8  # node processes per machine (one per core)
    machine_memory_bytes: int = 16 * GIB
    memory_target: float = 0.7  # of a machine's memory, for node RSS
    fd_limit: int = 65536  # RLIMIT_NOFILE of a node process
    shard_memory_bytes: int = 4 * GIB  # a Redis shard's maxmemory

    def __post_init__(self) -> None:
        if self.connections < 1 or self.rooms < 1:
            raise ValueError("connections and rooms must be at least 1")
        positive = {
            "messages_per_second": self.messages_per_second >= 0,
            "room_size": self.room_size is None or self.room_size >= 1,
            "deliveries_per_second": self.deliveries_per_second is None
            or self.deliveries_per_second >= 0,
            "nodes_per_room": self.nodes_per_room is None or self.nodes_per_room >= 1,
            "message_bytes": self.message_bytes >= 0,
            "history_size": self.history_size >= 0,
            "history_ttl": self.history_ttl > 0,
            "history_bytes": self.history_bytes >= 0,
            "session_seconds": self.session_seconds > 0,
            "storm_seconds": self.storm_seconds > 0,
            "cpu_target": 0 < self.cpu_target <= 1,
            "cores_per_machine": self.cores_per_machine >= 1,
            "machine_memory_bytes": self.machine_memory_bytes > 0,
            "memory_target": 0 < self.memory_target <= 1,
            "fd_limit": self.fd_limit > FD_RESERVE,
            "shard_memory_bytes": self.shard_memory_bytes > 0,
        }
        wrong = [name for name, ok in positive.items() if not ok]
        if wrong:
            raise ValueError("out of range: " + ", ".join(wrong))

    @property
    def mean_room_size(self) -> float:
        return self.room_size if self.room_size is not None else self.connections / self.rooms

    @property
    def deliveries(self) -> float:
        if self.deliveries_per_second is not None:
            return self.deliveries_per_second
        return self.messages_per_second * self.mean_room_size

    @property
    def setups_per_second(self) -> float:
        return self.connections / self.session_seconds


@dataclass(frozen=True, slots=True)
class Constraint:
    name: str
    needs: int  # the count this constraint alone asks for
    why: str  # its derivation, in numbers


@dataclass(frozen=True, slots=True)
class Sized:
    """A resource's count: the largest any constraint asks for, and every constraint's ask."""

    count: int
    constraints: tuple[Constraint, ...]

    @property
    def binding(self) -> Constraint:
        return max(self.constraints, key=lambda c: c.needs)


@dataclass(frozen=True, slots=True)
class Plan:
    deployment: Deployment
    nodes: Sized
    machines: int
    node_rss_bytes: float  # per node process, after losing one node
    subscribing_nodes: float  # nodes a message goes to (per message, on average)
    node_cores: float  # steady CPU of all nodes
    nginx: Sized
    nginx_memory_bytes: float
    redis: Sized
    redis_cores: float  # steady CPU of all shards
    redis_memory_bytes: float  # all shards
    history_kept: int  # messages kept per room


def subscribing_nodes(nodes: int, room_size: float) -> float:
    """Distinct nodes holding a room's members, members placed independently at random (the
    balancer's choice): N (1 - (1 - 1/N)^S). It is what a message costs in Redis sends and node
    receives beyond the sender's."""
    if nodes <= 1:
        return 1.0
    return nodes * (1 - math.pow(1 - 1 / nodes, max(1.0, room_size)))


def _smallest(ok: Callable[[int], bool], start: int = 1) -> int:
    """The smallest n >= start with ok(n), for ok false then true as n grows."""
    high = max(start, 1)
    while not ok(high):
        if high >= MAX_COUNT:
            raise ValueError("no deployment of fewer than 2^24 of a resource carries this load")
        high = min(high * 2, MAX_COUNT)
    low = max(start, high // 2)
    while low < high:
        middle = (low + high) // 2
        if ok(middle):
            high = middle
        else:
            low = middle + 1
    return high


def _history_kept(d: Deployment, entry_bytes: float) -> int:
    """Messages a room keeps: the size bound, the byte bound, or what arrives within the TTL."""
    by_bytes = int(d.history_bytes // entry_bytes) if entry_bytes > 0 else d.history_size
    within_ttl = math.ceil(d.messages_per_second / d.rooms * d.history_ttl)
    return max(0, min(d.history_size, max(1, by_bytes), within_ttl))


@dataclass(frozen=True, slots=True)
class Cores:
    """Steady CPU (cores) of each tier, for a given number of node processes."""

    nodes: float
    nginx: float
    redis: float


def nodes_per_message(d: Deployment, nodes: int) -> float:
    """Nodes a message is sent to: the given placement, or members placed at random."""
    if d.nodes_per_room is not None:
        return min(float(nodes), d.nodes_per_room)
    return subscribing_nodes(nodes, d.mean_room_size)


def steady_cores(d: Deployment, c: UnitCosts, nodes: int) -> Cores:
    k = nodes_per_message(d, nodes)
    messages, setups = d.messages_per_second, d.setups_per_second
    return Cores(
        nodes=(
            d.deliveries * c.node_us_per_delivery
            + messages * (c.node_us_per_ingest + k * c.node_us_per_receive)
            + setups * c.node_us_per_setup
        )
        / 1e6,
        nginx=(d.deliveries * c.nginx_us_per_delivery + setups * c.nginx_us_per_setup) / 1e6,
        redis=(
            messages * (c.redis_us_per_message + k * c.redis_us_per_receive)
            + setups * c.redis_us_per_setup
        )
        / 1e6,
    )


def plan(d: Deployment, c: UnitCosts) -> Plan:
    size = d.mean_room_size
    setups = d.setups_per_second

    def node_cpu(nodes: int) -> float:
        """Steady CPU seconds per second of all nodes (cores)."""
        return steady_cores(d, c, nodes).nodes

    def storm_setups(nodes: int) -> float:
        """Setups/s each surviving node takes while a lost node's clients come back."""
        return d.connections / nodes / d.storm_seconds / (nodes - 1)

    def held_after_loss(nodes: int) -> float:
        return d.connections / max(1, nodes - 1)

    node_share = d.machine_memory_bytes * d.memory_target / d.cores_per_machine
    base = c.node_base_kib * KIB
    per_connection = c.node_kib_per_connection * KIB
    if node_share <= base:
        raise ValueError("a machine's memory share per node process is below a node's base RSS")
    n_steady = _smallest(lambda n: node_cpu(n) / n <= d.cpu_target)
    n_storm = _smallest(
        lambda n: node_cpu(n) / (n - 1) + storm_setups(n) * c.node_us_per_setup / 1e6 <= 1.0,
        start=2,
    )
    n_memory = _smallest(lambda n: base + held_after_loss(n) * per_connection <= node_share, 2)
    n_fds = _smallest(lambda n: held_after_loss(n) + FD_RESERVE <= d.fd_limit, 2)
    nodes = max(n_steady, n_storm, n_memory, n_fds)
    k = nodes_per_message(d, nodes)
    cores = node_cpu(nodes)
    deliveries = (
        f"deliveries {d.deliveries:,.0f}/s x {c.node_us_per_delivery:.1f} us"
        f" + messages {d.messages_per_second:,.0f}/s x ({c.node_us_per_ingest:.0f} us"
        f" + {k:.1f} nodes x {c.node_us_per_receive:.0f} us)"
        f" + setups {setups:,.0f}/s x {c.node_us_per_setup:.0f} us"
    )
    storm = storm_setups(nodes)
    node_sized = Sized(
        nodes,
        (
            Constraint(
                "cpu, steady",
                n_steady,
                f"{deliveries} = {cores:.2f} cores; each node <= {d.cpu_target:.0%} of a core",
            ),
            Constraint(
                "cpu, one node lost",
                n_storm,
                f"its {d.connections / nodes:,.0f} clients back within {d.storm_seconds:g} s:"
                f" {storm:,.1f} setups/s per survivor x {c.node_us_per_setup:.0f} us"
                f" + steady {cores / max(1, nodes - 1):.2f} core each <= 1 core",
            ),
            Constraint(
                "memory",
                n_memory,
                f"{held_after_loss(nodes):,.0f} connections per node after a loss x"
                f" {c.node_kib_per_connection:.2f} KiB + {c.node_base_kib / KIB:.0f} MiB base"
                f" <= {node_share / GIB:.2f} GiB ({d.memory_target:.0%} of"
                f" {d.machine_memory_bytes / GIB:g} GiB / {d.cores_per_machine} processes)",
            ),
            Constraint(
                "file descriptors",
                n_fds,
                f"{held_after_loss(nodes):,.0f} connections per node after a loss"
                f" + {FD_RESERVE} <= {d.fd_limit:,}",
            ),
        ),
    )
    machines = math.ceil(nodes / d.cores_per_machine)
    node_rss = base + held_after_loss(nodes) * per_connection

    # nginx relays every delivery and terminates every connection.
    nginx_steady = steady_cores(d, c, nodes).nginx
    nginx_storm = d.connections / nodes / d.storm_seconds * c.nginx_us_per_setup / 1e6
    nginx_sized = Sized(
        max(1, math.ceil(nginx_steady / d.cpu_target), math.ceil(nginx_steady + nginx_storm)),
        (
            Constraint(
                "cpu, steady",
                max(1, math.ceil(nginx_steady / d.cpu_target)),
                f"deliveries {d.deliveries:,.0f}/s x {c.nginx_us_per_delivery:.1f} us"
                f" + setups {setups:,.0f}/s x {c.nginx_us_per_setup:.0f} us"
                f" = {nginx_steady:.2f} cores; each <= {d.cpu_target:.0%}",
            ),
            Constraint(
                "cpu, one node lost",
                math.ceil(nginx_steady + nginx_storm),
                f"+ {d.connections / nodes / d.storm_seconds:,.0f} setups/s x"
                f" {c.nginx_us_per_setup:.0f} us = {nginx_steady + nginx_storm:.2f} cores",
            ),
        ),
    )

    # Redis: CPU per message and per subscribing node, per setup; memory per room and member.
    redis_steady = steady_cores(d, c, nodes).redis
    redis_storm = d.connections / nodes / d.storm_seconds * c.redis_us_per_setup / 1e6
    entry = d.message_bytes + c.redis_history_bytes_per_message
    kept = _history_kept(d, entry)
    memberships = d.rooms * size
    memory = (
        d.rooms * (kept * entry + c.redis_room_bytes)
        + memberships * c.redis_presence_bytes_per_member
    )
    by_steady = max(1, math.ceil(redis_steady / d.cpu_target))
    by_storm = max(1, math.ceil(redis_steady + redis_storm))
    by_memory = max(1, math.ceil(memory / d.shard_memory_bytes))
    redis_sized = Sized(
        max(by_steady, by_storm, by_memory),
        (
            Constraint(
                "cpu, steady",
                by_steady,
                f"messages {d.messages_per_second:,.0f}/s x ({c.redis_us_per_message:.0f} us"
                f" + {k:.1f} nodes x {c.redis_us_per_receive:.1f} us)"
                f" + setups {setups:,.0f}/s x {c.redis_us_per_setup:.0f} us"
                f" = {redis_steady:.2f} cores; each shard <= {d.cpu_target:.0%} of its core",
            ),
            Constraint(
                "cpu, one node lost",
                by_storm,
                f"+ {d.connections / nodes / d.storm_seconds:,.0f} setups/s x"
                f" {c.redis_us_per_setup:.0f} us = {redis_steady + redis_storm:.2f} cores",
            ),
            Constraint(
                "memory",
                by_memory,
                f"{d.rooms:,} rooms x ({kept} messages x {entry:.0f} B + {c.redis_room_bytes:.0f}"
                f" B) + {memberships:,.0f} members x {c.redis_presence_bytes_per_member:.0f} B"
                f" = {memory / GIB:.2f} GiB; each shard <= {d.shard_memory_bytes / GIB:g} GiB",
            ),
        ),
    )
    return Plan(
        deployment=d,
        nodes=node_sized,
        machines=machines,
        node_rss_bytes=node_rss,
        subscribing_nodes=k,
        node_cores=cores,
        nginx=nginx_sized,
        nginx_memory_bytes=d.connections * c.nginx_kib_per_connection * KIB,
        redis=redis_sized,
        redis_cores=redis_steady,
        redis_memory_bytes=memory,
        history_kept=kept,
    )


def _section(title: str, sized: Sized) -> list[str]:
    lines = [f"{title}: {sized.count:,}  (bound by {sized.binding.name})"]
    for constraint in sized.constraints:
        lines.append(f"  {constraint.name + ':':<20} >= {constraint.needs:<6,} {constraint.why}")
    return lines


def render(p: Plan, source: str) -> str:
    """The plan as text: each figure, which constraint binds it, and its derivation."""
    d = p.deployment
    lines = [
        f"load: {d.connections:,} connections, {d.rooms:,} rooms of {d.mean_room_size:g},"
        f" {d.messages_per_second:,.0f} messages/s of {d.message_bytes} B"
        f" = {d.deliveries:,.0f} deliveries/s; {d.setups_per_second:,.0f} setups/s"
        f" (sessions of {d.session_seconds:g} s)",
        f"unit costs: {source}",
        "",
        *_section("node processes", p.nodes),
        f"  a message reaches {p.subscribing_nodes:.1f} nodes; all nodes use"
        f" {p.node_cores:.2f} cores steady; RSS {p.node_rss_bytes / GIB:.2f} GiB per node"
        " after a loss",
        f"machines: {p.machines:,} x {d.cores_per_machine} cores,"
        f" {d.machine_memory_bytes / GIB:g} GiB (one node process per core)",
        "",
        *_section("nginx cores", p.nginx),
        f"  memory {p.nginx_memory_bytes / GIB:.2f} GiB; {2 * d.connections:,} file"
        " descriptors (client + upstream per connection)",
        "",
        *_section("redis shards", p.redis),
        f"  {p.history_kept} messages kept per room; {p.redis_memory_bytes / GIB:.2f} GiB in"
        f" all, {p.redis_memory_bytes / p.redis.count / GIB:.2f} GiB per shard;"
        f" {p.redis_cores / p.redis.count:.2f} core per shard steady",
    ]
    return "\n".join(lines) + "\n"
