"""Red team 2: a big room (ROOMCAST_BIG_ROOM_MEMBERS low) whose members' node is paused past the
presence TTL (SIGSTOP, then SIGCONT) or killed (SIGKILL).

docs/protocol.md, Big rooms: members get `presence_changed` ("`C` in the room now") instead of
`user_joined`/`user_left`; docs/guarantees.md: a dead node's members are removed from presence
and announced, a paused one's put back and announced again once it runs. What a member of the
other node is told must converge on the truth: the last `presence_changed` names the room's
real connection count, and the presence answer counts every member once.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.adversarial.devcluster_shim import LocalCluster, scaled
from tests.adversarial.rawws import RawWebSocket
from tests.adversarial.readiness import until_ready

PRESENCE_TTL_S = 1.5
THRESHOLD = 5
INTERVAL_S = 0.2
ON_PAUSED, ON_OTHER = 8, 2


@pytest.fixture
def cluster() -> Iterator[Any]:
    env = {
        "ROOMCAST_PRESENCE_TTL": str(PRESENCE_TTL_S),
        "ROOMCAST_BIG_ROOM_MEMBERS": str(THRESHOLD),
        "ROOMCAST_BIG_ROOM_INTERVAL": str(INTERVAL_S),
    }
    with LocalCluster(2, nginx=False, node_env=env) as running:
        yield running


async def join_all(port: int, room: str, names: list[str]) -> list[RawWebSocket]:
    sockets = []
    for name in names:
        ws = await RawWebSocket.connect("127.0.0.1", port)
        sockets.append(ws)
        await ws.send({"type": "join", "room": room, "username": name})
        await ws.next_text(type="joined", room=room)
    return sockets


async def presence_total(ws: RawWebSocket, room: str) -> int:
    request_id = uuid.uuid4().hex
    await ws.send({"type": "presence", "room": room, "id": request_id})
    answer = await ws.next_text(type="presence", id=request_id)
    if "total_connections" in answer:
        return int(answer["total_connections"])
    return sum(int(m["connections"]) for m in answer["members"])


def last_notice(ws: RawWebSocket) -> dict[str, Any] | None:
    notices = [e for e in ws.received.texts if e.get("type") == "presence_changed"]
    return notices[-1] if notices else None


async def converges(watcher: RawWebSocket, room: str, expected: int, timeout: float) -> str:
    """Wait until presence counts ``expected`` connections and the member's last
    presence_changed agrees: big with that count, or small again (then user_joined/user_left
    take over, and a client resynchronises with presence: docs/protocol.md); what they said
    last if they never do."""
    deadline = time.monotonic() + scaled(timeout)
    said = ""
    while time.monotonic() < deadline:
        total = await presence_total(watcher, room)
        notice = last_notice(watcher)
        said = (
            f"presence {total}, the watcher's last presence_changed {notice} (expected {expected})"
        )
        if total == expected and notice is not None:
            if expected >= THRESHOLD and notice["big"] and notice["connections"] == expected:
                return ""
            if expected < THRESHOLD * 0.9 and not notice["big"]:
                return ""
        await asyncio.sleep(INTERVAL_S)
    return said


@pytest.mark.parametrize("fault", ["sigstop", "sigkill"])
async def test_big_room_counts_converge_after_a_node_pause_or_kill(
    cluster: Any, fault: str
) -> None:
    paused, other = cluster.nodes
    for node in cluster.nodes:
        await until_ready(node)
    room = f"bigpause-{uuid.uuid4().hex[:8]}"
    watchers = await join_all(other.port, room, [f"w{i}" for i in range(ON_OTHER)])
    sleepers = await join_all(paused.port, room, [f"s{i}" for i in range(ON_PAUSED)])
    watcher = watchers[0]
    try:
        problem = await converges(watcher, room, ON_PAUSED + ON_OTHER, 10)
        assert not problem, f"before the fault: {problem}"
        if fault == "sigkill":
            paused.process.signal(signal.SIGKILL)
            problem = await converges(watcher, room, ON_OTHER, PRESENCE_TTL_S * 4 / 3 + 10)
            stage = "after SIGKILL"
        else:
            paused.process.signal(signal.SIGSTOP)
            try:
                problem = await converges(watcher, room, ON_OTHER, PRESENCE_TTL_S * 4 / 3 + 10)
                assert not problem, f"while SIGSTOPped past the TTL: {problem}"
            finally:
                paused.process.signal(signal.SIGCONT)
            problem = await converges(watcher, room, ON_PAUSED + ON_OTHER, PRESENCE_TTL_S * 3 + 10)
            stage = "after SIGCONT"
        kinds = [e.get("type") for e in watcher.received.texts]
        figures = (
            f"{fault}: {stage}: {problem or 'converged'}; watcher's events: "
            f"{ {k: kinds.count(k) for k in set(kinds)} }"
        )
        print(figures)
        assert not problem, figures
    finally:
        for ws in watchers + sleepers:
            await ws.close()
