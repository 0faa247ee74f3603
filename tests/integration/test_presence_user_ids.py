"""Presence names users by ``user_id`` on real nodes and a real Redis (standalone, Sentinel and
Cluster).

Before, a presence entry was a name and a connection count: two users called "alice" were one
entry, and a member could not match it to the ``user_joined`` it saw. And the ``user_left`` a
node publishes for the members of a dead node (the reaper) had no ``user_id``: Redis's presence
kept names only. Now each entry says which user_id holds how many of the name's connections,
and the id rides in the member's presence field, so the reaper announces it too; so does the
``user_joined`` a node that was taken for dead (paused past the presence TTL) sends again for
its members once it runs again.

During a rolling upgrade nodes of the previous release (before user ids) share the presence hash:
they must read what this release writes (names, counts, reaping), and this release what they
wrote (their members' entries have no id).
"""

from __future__ import annotations

import contextlib
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from roomcast_dev.devcluster import LocalCluster, NodeProcess
from roomcast_dev.redis_topologies import RedisClusterTopology, SentinelTopology

from tests.support.cluster import FAST_ENV
from tests.support.previous_release import export_previous_release, start_old
from tests.support.wsclient import Client

pytestmark = pytest.mark.integration

PRESENCE_TTL = 1.5
# Reaped within the TTL plus a heartbeat interval (TTL/3); the rest is slack for a loaded machine.
REAPED_WITHIN = 15.0


def topology_env(stack: contextlib.ExitStack, topology: str) -> dict[str, str]:
    """Node settings for ``topology``: a short presence TTL, and where a Redis Cluster or the
    Sentinels are (standalone: the cluster's own redis-server)."""
    env = dict(FAST_ENV, ROOMCAST_PRESENCE_TTL=str(PRESENCE_TTL))
    if topology == "cluster":
        env.update(stack.enter_context(RedisClusterTopology(primaries=3, replicas=0)).node_env())
    elif topology == "sentinel":
        env.update(stack.enter_context(SentinelTopology(replicas=1, sentinels=3)).node_env())
    return env


async def presence_entries(client: Client, room: str) -> dict[str, dict[str, Any]]:
    await client.send(type="presence", room=room)
    answer = await client.recv_type("presence", room=room)
    return {member["username"]: member for member in answer["members"]}


@pytest.mark.parametrize("topology", ["standalone", "sentinel", "cluster"])
async def test_namesakes_and_reaped_members_are_told_by_user_id(topology: str) -> None:
    with contextlib.ExitStack() as stack:
        env = topology_env(stack, topology)
        cluster = LocalCluster(2, redis=topology == "standalone", nginx=False, node_env=env)
        stack.enter_context(cluster)
        victim, survivor = cluster.nodes
        room = "ids-" + uuid.uuid4().hex[:8]
        watcher = await Client.connect(survivor.url)
        await watcher.join(room, "watcher")
        doomed = await Client.connect(victim.url)
        namesake = await Client.connect(survivor.url)
        for alice in (doomed, namesake):
            await alice.join(room, "alice")
        doomed_id, namesake_id = doomed.welcome["user_id"], namesake.welcome["user_id"]
        assert doomed_id != namesake_id
        joins = [await watcher.recv_type("user_joined", username="alice") for _ in range(2)]
        assert [event.get("user_id") for event in joins] == [doomed_id, namesake_id]

        both = {"username": "alice", "connections": 2, "user_ids": {doomed_id: 1, namesake_id: 1}}
        entries = await presence_entries(watcher, room)
        assert entries["alice"] == both, entries

        # Paused past the TTL: reaped with its id, announced again with it once it runs again.
        victim.process.signal(signal.SIGSTOP)
        try:
            left = await watcher.recv_type("user_left", REAPED_WITHIN, username="alice")
        finally:
            victim.process.signal(signal.SIGCONT)
        assert left.get("user_id") == doomed_id, left
        back = await watcher.recv_type("user_joined", REAPED_WITHIN, username="alice")
        assert back.get("user_id") == doomed_id, back
        assert (await presence_entries(watcher, room))["alice"] == both

        victim.process.signal(signal.SIGKILL)
        left = await watcher.recv_type("user_left", REAPED_WITHIN, username="alice")
        assert left.get("user_id") == doomed_id, left
        entries = await presence_entries(watcher, room)
        assert entries["alice"] == {
            "username": "alice",
            "connections": 1,
            "user_ids": {namesake_id: 1},
        }, entries
        for client in (watcher, namesake):
            await client.close()


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield export_previous_release(tmp_path_factory.mktemp("previous-release"))


async def member(node: NodeProcess, room: str, username: str) -> Client:
    client = await Client.connect(node.url)
    await client.join(room, username)
    return client


def counts(entries: dict[str, dict[str, Any]]) -> dict[str, int]:
    return {name: entry["connections"] for name, entry in entries.items()}


async def reaped(watcher: Client, usernames: set[str]) -> dict[str, dict[str, Any]]:
    """The user_left the watcher gets for each of ``usernames`` (a dead node's members)."""
    events = [await watcher.recv_type("user_left", REAPED_WITHIN) for _ in usernames]
    assert {event["username"] for event in events} == usernames, events
    return {event["username"]: event for event in events}


@pytest.mark.parametrize("topology", ["standalone", "cluster"])
async def test_old_and_new_nodes_read_and_reap_each_others_presence(
    previous_release: Path, topology: str
) -> None:
    """An old node beside a new one: each lists the other's members, by name and count, the new
    one with ids where they are known; the old node reaps a dead new node's members and the new
    one a dead old node's, each announced once, the presence hash left holding the living."""
    with contextlib.ExitStack() as stack:
        env = topology_env(stack, topology)
        cluster = LocalCluster(0, redis=topology == "standalone", nginx=False, node_env=env)
        stack.enter_context(cluster)
        old = start_old(cluster, previous_release)
        new = cluster.start_node()
        probe = await Client.connect(old.url)
        assert "user_id" not in probe.welcome, "not a node of the previous release"
        await probe.close()
        room = "upgrade-" + uuid.uuid4().hex[:8]
        bob, carol = [await member(old, room, name) for name in ("bob", "carol")]
        alice, dave = [await member(new, room, name) for name in ("alice", "dave")]
        everyone = {"alice": 1, "bob": 1, "carol": 1, "dave": 1}

        # The old node reads the new one's entries by name (their ids in the field, not the name).
        assert await presence_entries(carol, room) == {
            name: {"username": name, "connections": 1} for name in everyone
        }
        # The new node reads the old one's entries: counted, with no id.
        entries = await presence_entries(dave, room)
        assert counts(entries) == everyone
        assert entries["bob"]["user_ids"] == entries["carol"]["user_ids"] == {}
        assert entries["alice"]["user_ids"] == {alice.welcome["user_id"]: 1}

        # The old node reaps the new one's members (whose fields hold their ids): told without.
        new.process.signal(signal.SIGKILL)
        told = await reaped(carol, {"alice", "dave"})
        assert all("user_id" not in event for event in told.values()), told
        assert await presence_entries(carol, room) == {
            name: {"username": name, "connections": 1} for name in ("bob", "carol")
        }

        # A new node reaps the old one's members (no id in their fields): told without.
        upgraded = cluster.start_node()
        erin = await member(upgraded, room, "erin")
        entries = await presence_entries(erin, room)
        assert counts(entries) == {"bob": 1, "carol": 1, "erin": 1}
        assert entries["erin"]["user_ids"] == {erin.welcome["user_id"]: 1}
        old.process.signal(signal.SIGKILL)
        told = await reaped(erin, {"bob", "carol"})
        assert all("user_id" not in event for event in told.values()), told
        assert await presence_entries(erin, room) == {
            "erin": {"username": "erin", "connections": 1, "user_ids": {erin.welcome["user_id"]: 1}}
        }
        for client in (bob, carol, alice, dave, erin):
            await client.close()  # those of the killed nodes are closed already
