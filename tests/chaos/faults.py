"""Fault injectors: each does one thing an operator or the network does to a running system,
through signals, Redis commands or the relay, holds it for a while, and undoes it.

Every injector is ``async (ctx, step) -> FaultRecord``; blocking work (process waits, Redis
commands) runs in a thread so the clients' event loop keeps running under the fault.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import redis

from tests.chaos.clients import ChaosClient
from tests.chaos.cluster import ChaosCluster, Topology
from tests.chaos.devtools import ClusterError, ManagedProcess, SentinelTopology, wait_until

# Redis' default for pub/sub clients, restored after the overflow fault.
DEFAULT_PUBSUB_LIMIT = "pubsub 33554432 8388608 60"
# Tiny limits: one chat message larger than Redis' 16 KiB reply buffer gets subscribers cut.
OVERFLOW_PUBSUB_LIMIT = "pubsub 4096 2048 1"
OVERFLOW_MESSAGE_CHARS = 40_000


@dataclass
class Step:
    """One scheduled fault: what, on which target (index into nodes/rooms), for how long."""

    kind: str
    target: int
    hold: float
    variant: str = ""


@dataclass
class FaultRecord:
    kind: str
    target: str
    started: float
    ended: float
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class FaultContext:
    cluster: ChaosCluster
    clients: list[ChaosClient]
    rooms: list[str]
    rng: random.Random


Injector = Callable[[FaultContext, Step], Awaitable[FaultRecord]]


async def node_kill(ctx: FaultContext, step: Step) -> FaultRecord:
    slot = ctx.cluster.slots[step.target % len(ctx.cluster.slots)]
    victim, started = slot.node_id, time.monotonic()
    slot.process.process.signal(signal.SIGKILL)
    await asyncio.to_thread(slot.process.process.popen.wait, 10)
    await asyncio.sleep(step.hold)
    await asyncio.to_thread(ctx.cluster.restart_node, slot)
    return FaultRecord("node_kill", victim, started, time.monotonic(), {"down": step.hold})


async def node_drain(ctx: FaultContext, step: Step) -> FaultRecord:
    slot = ctx.cluster.slots[step.target % len(ctx.cluster.slots)]
    victim, started = slot.node_id, time.monotonic()
    slot.process.process.signal(signal.SIGTERM)
    code = await asyncio.to_thread(slot.process.process.popen.wait, 30)
    drained = time.monotonic() - started
    await asyncio.sleep(step.hold)
    await asyncio.to_thread(ctx.cluster.restart_node, slot)
    return FaultRecord(
        "node_drain", victim, started, time.monotonic(), {"exit": code, "drain_s": drained}
    )


async def node_stop(ctx: FaultContext, step: Step) -> FaultRecord:
    slot = ctx.cluster.slots[step.target % len(ctx.cluster.slots)]
    victim, started = slot.node_id, time.monotonic()
    slot.process.process.signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(step.hold)
    finally:
        slot.process.process.signal(signal.SIGCONT)
    return FaultRecord("node_stop", victim, started, time.monotonic(), {"frozen": step.hold})


def _standalone(ctx: FaultContext) -> Any:
    assert ctx.cluster.redis is not None, "standalone Redis only"
    return ctx.cluster.redis


async def redis_stop(ctx: FaultContext, step: Step) -> FaultRecord:
    server, started = _standalone(ctx), time.monotonic()
    server.process.signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(step.hold)
    finally:
        server.process.signal(signal.SIGCONT)
    return FaultRecord("redis_stop", "redis", started, time.monotonic(), {"frozen": step.hold})


async def _redis_restart(ctx: FaultContext, step: Step, wipe: bool) -> FaultRecord:
    server, started = _standalone(ctx), time.monotonic()
    await asyncio.to_thread(server.kill)
    if wipe:
        await asyncio.to_thread(server.wipe)
    await asyncio.sleep(step.hold)
    await asyncio.to_thread(server.start)
    kind = "redis_restart_empty" if wipe else "redis_restart_persistent"
    return FaultRecord(kind, "redis", started, time.monotonic(), {"down": step.hold})


async def redis_restart_empty(ctx: FaultContext, step: Step) -> FaultRecord:
    return await _redis_restart(ctx, step, wipe=True)


async def redis_restart_persistent(ctx: FaultContext, step: Step) -> FaultRecord:
    return await _redis_restart(ctx, step, wipe=False)


def _each_redis(ctx: FaultContext, *command: str) -> list[Any]:
    replies = []
    for client in ctx.cluster.redis_admin_clients():
        with client:
            replies.append(client.execute_command(*command))  # type: ignore[no-untyped-call]
    return replies


async def pubsub_kill(ctx: FaultContext, step: Step) -> FaultRecord:
    started = time.monotonic()
    killed = await asyncio.to_thread(_each_redis, ctx, "CLIENT", "KILL", "TYPE", "pubsub")
    return FaultRecord("pubsub_kill", "redis", started, time.monotonic(), {"killed": killed})


def _kill_one_normal_client(ctx: FaultContext) -> int:
    killed = 0
    for client in ctx.cluster.redis_admin_clients():
        with client:
            me = client.client_id()
            ids = [c["id"] for c in client.client_list(_type="normal") if int(c["id"]) != me]
            if ids:
                chosen = ctx.rng.choice(sorted(ids))
                killed += int(client.execute_command("CLIENT", "KILL", "ID", chosen))  # type: ignore[no-untyped-call]
    return killed


async def command_link_kill(ctx: FaultContext, step: Step) -> FaultRecord:
    started = time.monotonic()
    if step.variant == "by_id":
        killed: Any = await asyncio.to_thread(_kill_one_normal_client, ctx)
    else:
        killed = await asyncio.to_thread(
            _each_redis, ctx, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"
        )
    return FaultRecord(
        "command_link_kill", step.variant or "all", started, time.monotonic(), {"killed": killed}
    )


async def pubsub_overflow(ctx: FaultContext, step: Step) -> FaultRecord:
    started = time.monotonic()
    await asyncio.to_thread(
        _each_redis, ctx, "CONFIG", "SET", "client-output-buffer-limit", OVERFLOW_PUBSUB_LIMIT
    )
    try:
        senders = [c for c in ctx.clients if c.send_interval is not None]
        sender = senders[step.target % len(senders)]
        sent = await sender.burst(3, OVERFLOW_MESSAGE_CHARS)
        await asyncio.sleep(step.hold)
    finally:
        await asyncio.to_thread(
            _each_redis, ctx, "CONFIG", "SET", "client-output-buffer-limit", DEFAULT_PUBSUB_LIMIT
        )
    return FaultRecord(
        "pubsub_overflow", sender.room, started, time.monotonic(), {"big_messages": sent}
    )


async def blackhole(ctx: FaultContext, step: Step) -> FaultRecord:
    slot = ctx.cluster.slots[step.target % len(ctx.cluster.slots)]
    victim, started = slot.node_id, time.monotonic()
    # hold: late delivery after the partition; drop: the connections are gone afterwards.
    await asyncio.to_thread(
        slot.switch_relay, signal.SIGHUP if step.variant == "drop" else signal.SIGUSR1
    )
    try:
        await asyncio.sleep(step.hold)
    finally:
        await asyncio.to_thread(slot.switch_relay, signal.SIGUSR2)
    return FaultRecord(
        "blackhole", victim, started, time.monotonic(), {"held": step.hold, "mode": step.variant}
    )


def _sentinel_failover(ctx: FaultContext, variant: str) -> dict[str, Any]:
    """``command``: SENTINEL FAILOVER (an operator's switch-over); ``kill``: the primary is
    SIGKILLed, Sentinel promotes the replica, and the old server comes back (empty: no
    persistence) and is turned into a replica by Sentinel."""
    topology = ctx.cluster.sentinel
    assert topology is not None
    # A primary killed by the previous fault comes back empty, a primary in its own eyes, until
    # Sentinel makes it a replica (some 8 s later): a failover before that finds no replica to
    # promote (SENTINEL FAILOVER: NOGOODSLAVE; a kill: no primary at all, for good here, since
    # the killed one is restarted only after the failover).
    try:
        wait_until(partial(_promotable_replica, topology), 30, "a replica Sentinel would promote")
    except ClusterError as exc:
        raise ClusterError(f"{exc}; what Sentinel says: {_sentinel_views(topology)}") from exc
    old = topology.primary()
    if variant == "kill":
        old.kill()
    else:
        topology.sentinels[0].run("SENTINEL", "FAILOVER", topology.MASTER_NAME)
    try:
        new = topology.wait_for_failover(old.port)
    except ClusterError as exc:
        # Say why, instead of aborting the run blind (seed 4411 once stopped here at t+255 s).
        raise ClusterError(f"{exc}; what Sentinel says: {_sentinel_views(topology)}") from exc
    if variant == "kill":
        old.process = ManagedProcess(old.process.name, old.process.argv)
        old.process.wait_for_line(lambda line: "Ready to accept connections" in line, 20)
    return {"variant": variant, "old_port": old.port, "new_port": new.port}


def _promotable_replica(topology: SentinelTopology) -> bool:
    """Every sentinel knows a replica it would promote: reachable, not down, its link up."""
    for sentinel in topology.sentinels:
        replicas: list[dict[bytes, bytes]] = sentinel.run(
            "SENTINEL", "REPLICAS", topology.MASTER_NAME
        )
        if not any(
            r[b"flags"] == b"slave"
            and r.get(b"role-reported") == b"slave"
            and r.get(b"master-link-status") == b"ok"
            for r in replicas
        ):
            return False
    return True


def _sentinel_views(topology: SentinelTopology) -> dict[str, Any]:
    """Each sentinel's view of the primary and its replicas (flags, failover state, link
    status), and each data server's own role: why no replica was promoted."""
    views: dict[str, Any] = {}
    keep = {
        "ip", "port", "flags", "role-reported", "failover-state", "master-link-status",
        "master-link-down-time", "info-refresh", "num-other-sentinels",
    }  # fmt: skip

    def picked(fields: dict[bytes, bytes]) -> dict[str, str]:
        decoded = {k.decode(): v.decode() for k, v in fields.items()}
        return {k: v for k, v in decoded.items() if k in keep}

    for sentinel in topology.sentinels:
        try:
            primary = sentinel.run("SENTINEL", "MASTER", topology.MASTER_NAME)
            replicas = sentinel.run("SENTINEL", "REPLICAS", topology.MASTER_NAME)
            views[f"sentinel {sentinel.port}"] = {
                "primary": picked(primary),
                "replicas": [picked(replica) for replica in replicas],
            }
        except (redis.RedisError, OSError) as exc:  # a dead sentinel is part of the answer
            views[f"sentinel {sentinel.port}"] = repr(exc)
    for server in topology.redis_servers:
        try:
            info = server.client().info("replication")
            views[f"redis {server.port}"] = {
                k: info.get(k) for k in ("role", "master_port", "master_link_status")
            }
        except (redis.RedisError, OSError) as exc:
            views[f"redis {server.port}"] = repr(exc)
    return views


async def sentinel_failover(ctx: FaultContext, step: Step) -> FaultRecord:
    started = time.monotonic()
    details = await asyncio.to_thread(_sentinel_failover, ctx, step.variant)
    return FaultRecord("sentinel_failover", step.variant, started, time.monotonic(), details)


def _cluster_failover(ctx: FaultContext, step: Step) -> dict[str, Any]:
    topology = ctx.cluster.redis_cluster
    assert topology is not None
    primaries = topology.primaries()
    primary = primaries[step.target % len(primaries)]
    replica = topology.replicas_of(primary)[0]
    replica.run("CLUSTER", "FAILOVER")
    topology.wait_stable()
    return {"old_primary": primary.port, "new_primary": replica.port}


async def cluster_failover(ctx: FaultContext, step: Step) -> FaultRecord:
    started = time.monotonic()
    details = await asyncio.to_thread(_cluster_failover, ctx, step)
    return FaultRecord("cluster_failover", "shard", started, time.monotonic(), details)


def _slot_migration(ctx: FaultContext, step: Step) -> dict[str, Any]:
    topology = ctx.cluster.redis_cluster
    assert topology is not None
    room = ctx.rooms[step.target % len(ctx.rooms)]
    slot = int(topology.live_servers()[0].run("CLUSTER", "KEYSLOT", f"rc:{{{room}}}"))
    source = topology.owner_of(slot)
    target = next(s for s in topology.primaries() if s.port != source.port)
    topology.migration(slot, target).run()
    return {"room": room, "slot": slot, "from": source.port, "to": target.port}


async def slot_migration(ctx: FaultContext, step: Step) -> FaultRecord:
    started = time.monotonic()
    details = await asyncio.to_thread(_slot_migration, ctx, step)
    return FaultRecord("slot_migration", str(details["room"]), started, time.monotonic(), details)


INJECTORS: dict[str, Injector] = {
    "node_kill": node_kill,
    "node_drain": node_drain,
    "node_stop": node_stop,
    "redis_stop": redis_stop,
    "redis_restart_empty": redis_restart_empty,
    "redis_restart_persistent": redis_restart_persistent,
    "pubsub_kill": pubsub_kill,
    "command_link_kill": command_link_kill,
    "pubsub_overflow": pubsub_overflow,
    "blackhole": blackhole,
    "sentinel_failover": sentinel_failover,
    "cluster_failover": cluster_failover,
    "slot_migration": slot_migration,
}

_EVERYWHERE = ("node_kill", "node_drain", "node_stop", "pubsub_kill", "command_link_kill",
               "pubsub_overflow")  # fmt: skip
FAULTS_BY_TOPOLOGY: dict[Topology, tuple[str, ...]] = {
    "standalone": (
        *_EVERYWHERE, "redis_stop", "redis_restart_empty", "redis_restart_persistent", "blackhole",
    ),
    "sentinel": (*_EVERYWHERE, "sentinel_failover"),
    "cluster": (*_EVERYWHERE, "cluster_failover", "slot_migration"),
}  # fmt: skip

# How long each kind is held (seconds, drawn uniformly); the blackhole outlasts the nodes'
# 1 s Redis timeout so that they do notice it.
HOLD_RANGES: dict[str, tuple[float, float]] = {
    "node_kill": (0.3, 1.5),
    "node_drain": (0.3, 1.0),
    "node_stop": (1.0, 4.0),
    "redis_stop": (0.5, 3.0),
    "redis_restart_empty": (0.2, 1.5),
    "redis_restart_persistent": (0.2, 1.5),
    "pubsub_overflow": (0.5, 1.0),
    "blackhole": (1.5, 5.0),
}
VARIANTS: dict[str, tuple[str, ...]] = {
    "command_link_kill": ("all", "by_id"),
    "sentinel_failover": ("command", "kill"),
    "blackhole": ("hold", "drop"),
}
