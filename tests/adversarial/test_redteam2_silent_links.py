"""Red team 2: a Redis link of the publishing node goes silent mid-burst, without a reset (a NAT
or firewall that forgot the flow, a cable pulled between two switches): nothing passes either
way and nothing is closed, unlike `CLIENT KILL` (a reset at once) or a Redis SIGSTOP (every
link of every node at once).

docs/guarantees.md: "an `ack` ... means every member of the room on every node gets that
message once, in order, or gets a `loss` event"; "`unavailable` means not sent, `ack` means
sent, `unconfirmed` means unknown". Checked for a sender on the node whose link goes silent,
a member on the same node and a member on another node (straight to Redis): every acked text
reaches both exactly once and in offset order, or a `loss` names its offset; no refused text
reaches anyone; every message is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.adversarial.devcluster_shim import LocalCluster, scaled
from tests.adversarial.rawws import RawWebSocket, text
from tests.adversarial.readiness import until_ready
from tests.adversarial.redis_relay import RedisRelay

REDIS_TIMEOUT_S = 1.0
SEND_EVERY_S = 0.02
BEFORE, DURING = 20, 100  # messages before the silence, and from its start on (2 s)


@pytest.fixture
def cluster() -> Iterator[Any]:
    env = {
        "ROOMCAST_REDIS_TIMEOUT": str(REDIS_TIMEOUT_S),
        # One sender at 50/s: over the default rate (10/s), which is not what is tested here.
        "ROOMCAST_MESSAGE_RATE_PER_SECOND": "200",
        "ROOMCAST_MESSAGE_RATE_BURST": "400",
        "ROOMCAST_CLIENT_MESSAGE_RATE_PER_SECOND": "200",
        "ROOMCAST_CLIENT_MESSAGE_RATE_BURST": "400",
    }
    with LocalCluster(1, nginx=False, node_env=env) as running:
        yield running


def lost(member: RawWebSocket, offset: int) -> bool:
    for event in member.received.texts:
        if event.get("type") != "loss":
            continue
        end = event.get("to_offset")
        if event["from_offset"] <= offset and (end is None or offset <= end):
            return True
    return False


def check_member(name: str, member: RawWebSocket, acked: dict[str, int]) -> list[str]:
    got = [e for e in member.received.texts if e.get("type") == "message"]
    texts = [e["text"] for e in got]
    offsets = [e["offset"] for e in got]
    problems = []
    if len(set(texts)) != len(texts):
        problems.append(f"{name}: duplicates {sorted(t for t in set(texts) if texts.count(t) > 1)}")
    if offsets != sorted(offsets):
        problems.append(f"{name}: out of order")
    missing = [t for t, off in acked.items() if t not in texts and not lost(member, off)]
    if missing:
        problems.append(f"{name}: {len(missing)} acked, neither delivered nor lost: {missing[:5]}")
    return problems


@pytest.mark.parametrize("silenced", ["subscriber", "command", "both"])
async def test_a_link_gone_silent_on_the_publishing_node_loses_no_ack(
    cluster: Any, silenced: str
) -> None:
    other = cluster.nodes[0]
    relay = RedisRelay(cluster.redis_port)
    relay_port = await relay.start()
    room = f"silent-{uuid.uuid4().hex[:8]}"
    sockets: list[RawWebSocket] = []
    try:
        node = await asyncio.to_thread(
            cluster.start_node, {"ROOMCAST_REDIS_URL": f"redis://127.0.0.1:{relay_port}"}
        )
        await until_ready(other)
        await until_ready(node)
        for port in (node.port, node.port, other.port):
            sockets.append(await RawWebSocket.connect("127.0.0.1", port))
        sender, near, far = sockets
        for ws, name in ((near, "near"), (far, "far"), (sender, "sender")):
            await ws.send({"type": "join", "room": room, "username": name})
            await ws.next_text(type="joined", room=room)
        started = time.monotonic()
        for i in range(BEFORE + DURING):
            if i == BEFORE:
                silenced_links = 0
                if silenced in ("subscriber", "both"):
                    silenced_links += relay.silence(subscriber=True)
                if silenced in ("command", "both"):
                    silenced_links += relay.silence(subscriber=False)
                assert silenced_links, "no link to silence"
            sender.send_bytes(text({"type": "message", "text": f"m{i}", "id": i}))
            await asyncio.sleep(max(0.0, started + (i + 1) * SEND_EVERY_S - time.monotonic()))
        # Every message answered (ack or error with its id), within the documented bounds:
        # the deadline, a lookup, and at most 3 x the timeout of Redis unreachable.
        answers: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + scaled(REDIS_TIMEOUT_S * 6 + 10)
        while len(answers) < BEFORE + DURING and time.monotonic() < deadline:
            for event in sender.received.texts:
                if event.get("type") in ("ack", "error") and isinstance(event.get("id"), int):
                    answers.setdefault(event["id"], event)
            if len(answers) < BEFORE + DURING:
                sender.received.arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sender.received.arrived.wait(), 0.5)
        acked = {f"m{i}": a["offset"] for i, a in answers.items() if a["type"] == "ack"}
        refused = {f"m{i}" for i, a in answers.items() if a.get("code") == "unavailable"}
        codes = sorted({a.get("code", "ack") for a in answers.values()})
        # Members get what was acked: wait for the last acked offset (or a loss past it).
        last = max(acked.values())
        for member in (near, far):
            wait_until = time.monotonic() + scaled(REDIS_TIMEOUT_S * 6 + 10)
            while time.monotonic() < wait_until:
                seen = {
                    e.get("offset") for e in member.received.texts if e.get("type") == "message"
                }
                if last in seen or lost(member, last):
                    break
                member.received.arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(member.received.arrived.wait(), 0.5)
        problems = [
            *check_member("near", near, acked),
            *check_member("far", far, acked),
        ]
        for name, member in (("near", near), ("far", far)):
            texts = {e["text"] for e in member.received.texts if e.get("type") == "message"}
            if texts & refused:
                problems.append(f"{name}: got refused texts {sorted(texts & refused)[:5]}")
        if len(set(acked.values())) != len(acked):
            problems.append("two messages acked under one offset")
        losses = {
            name: [e for e in m.received.texts if e.get("type") == "loss"]
            for name, m in (("near", near), ("far", far))
        }
        figures = (
            f"{silenced} link(s) of the sender's node silent from message {BEFORE} on: "
            f"{len(answers)}/{BEFORE + DURING} answered ({codes}), {len(acked)} acked, "
            f"{len(refused)} unavailable; losses {losses}; problems {problems}"
        )
        print(figures)
        assert len(answers) == BEFORE + DURING, figures
        assert not problems, figures
    finally:
        for ws in sockets:
            await ws.close()
        await relay.close()
