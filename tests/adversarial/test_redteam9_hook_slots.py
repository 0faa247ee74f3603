"""Red team 9: one client takes every slot of a hook; everybody else's joins and handshakes fail.

docs/hooks.md bounds the calls of a hook in flight per node (`ROOMCAST_HOOK_MAX_CONCURRENCY`, 64:
past it a call fails at once, `busy`, and the fail mode decides; the connect hook always fails
closed). Nothing said whose calls those are. A join asks the join hook before anything of the join
happens, and a connection may send 20 joins at once (its join burst, 16 rooms; they are asked one
after the other): one user's 80 connections sent 1,280 joins in one go, 64 of them held every slot
for as long as the backend took, and every other user's join meanwhile was refused
`hook_unavailable` ("the application's join hook failed (busy)"). A handshake without a token asks
the connect hook; one address may open 400 at once (its admission burst): its 300 took every slot,
and other addresses' logged-in users were refused 503 at the handshake. The backend needs to be no
slower than a database lookup under load (here each call is answered after HOLD_S).

Measured on main: 4 of 4 other users' joins refused (the attacker's calls in flight at the
backend peaked at 64); 4 of 4 other addresses' handshakes refused 503. Now a client (a token's
`sub`, the connect hook's address) holds at most an eighth of a hook's slots and its further
calls wait their turn within the hook timeout: 0 refused, the attacker's peak 8.

A join the backend denies leaves no trace, so no leave ever spent the client's join bucket for
it: one user's 32 connections each sent their burst of 20 joins of rooms the backend denies, and
the node asked the backend all 640 times (again on every new connection). Now a denied join
spends like a leave: 68 asked, the rest refused `rate_limited` before asking.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.adversarial.devcluster_shim import HookServer, LocalCluster, free_port, scaled, verdict
from tests.adversarial.rawws import HandshakeRefused, RawWebSocket, handshake_request, text
from tests.adversarial.tokens import SECRET, sign

HOOK_SLOTS = 64  # ROOMCAST_HOOK_MAX_CONCURRENCY's default
CLIENT_SHARE = HOOK_SLOTS // 8  # what one client may hold now
ATTACK_CONNECTIONS = 80  # of one user, each sending 16 joins at once (within its join burst;
# a connection's joins are asked one after the other)
JOINS_EACH = 16
ATTACK_HANDSHAKES = 300  # of one address, within its admission burst (400)
VICTIMS = 4
HOLD_S = 0.5  # how long the backend takes to answer any call (scaled)
ATTACKER_ADDRESS = "203.0.113.66"


class SlowBackend:
    """A backend answering every call after HOLD_S; counts each client's calls in flight."""

    def __init__(self, client_of: Any) -> None:
        self.client_of = client_of
        self.in_flight: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.attacker_busy = asyncio.Event()

    async def answer(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        client = self.client_of(body)
        self.in_flight[client] += 1
        self.peak[client] = max(self.peak[client], self.in_flight[client])
        if client == "attacker" and self.in_flight[client] >= CLIENT_SHARE:
            self.attacker_busy.set()
        try:
            await asyncio.sleep(scaled(HOLD_S))
        finally:
            self.in_flight[client] -= 1
        if body["hook"] == "connect":
            if body["headers"].get("cookie") == "session=ok":
                return verdict({"result": "allow", "user": f"u-{body['client_address']}"})
            return verdict({"result": "deny", "reason": "log in first"})
        return verdict({"result": "allow"})


@pytest.fixture
def hooked() -> Iterator[tuple[Any, int]]:
    """One node with real Redis, tokens on, the connect and join hooks at a port of the test's."""
    port = free_port()
    base = f"http://127.0.0.1:{port}/hooks"
    env = {
        "ROOMCAST_AUTH_SECRET": SECRET,
        "ROOMCAST_HOOK_CONNECT_URL": f"{base}/connect",
        "ROOMCAST_HOOK_JOIN_URL": f"{base}/join",
    }
    with LocalCluster(1, nginx=False, node_env=env) as cluster:
        yield cluster.nodes[0], port


async def answer_to(ws: RawWebSocket, request_id: str) -> dict[str, Any]:
    return await ws.next_text(timeout=10, id=request_id)


async def test_one_user_flooding_joins_leaves_other_users_the_join_hook(
    hooked: tuple[Any, int],
) -> None:
    node, port = hooked
    backend = SlowBackend(lambda body: "attacker" if body["user"] == "mallory" else "victim")
    victims = [
        await RawWebSocket.connect("127.0.0.1", node.port, f"/chat?token={sign(sub=f'v{i}')}")
        for i in range(VICTIMS)
    ]
    attack = f"/chat?token={sign(sub='mallory')}"
    attackers = [
        await RawWebSocket.connect("127.0.0.1", node.port, attack)
        for _ in range(ATTACK_CONNECTIONS)
    ]
    tag = uuid.uuid4().hex[:6]
    try:
        async with HookServer(port, backend.answer):
            for index, ws in enumerate(attackers):
                ws.send_bytes(
                    b"".join(
                        text({"type": "join", "room": f"r{tag}-{index}-{k}", "id": f"a{k}"})
                        for k in range(JOINS_EACH)
                    )
                )
            await asyncio.wait_for(backend.attacker_busy.wait(), scaled(10))
            for index, ws in enumerate(victims):
                ws.send_bytes(text({"type": "join", "room": f"lobby-{tag}-{index}", "id": "v"}))
            answers = [await answer_to(ws, "v") for ws in victims]
    finally:
        for ws in [*victims, *attackers]:
            await ws.close()
    refused = [a for a in answers if a.get("type") != "joined"]
    figures = (
        f"one user's {ATTACK_CONNECTIONS} connections sent {ATTACK_CONNECTIONS * JOINS_EACH} "
        f"joins at once: {len(refused)} of {VICTIMS} other users' joins refused "
        f"({[a.get('reason') for a in refused][:1]}); the attacker's calls in flight at the "
        f"backend peaked at {backend.peak['attacker']} (slots: {HOOK_SLOTS})"
    )
    print(figures)
    assert not refused, figures
    assert backend.peak["attacker"] <= CLIENT_SHARE, figures


async def handshake_status(port: int, headers: list[tuple[str, str]]) -> int:
    """The status of one WebSocket handshake (101 once the hook let it in)."""
    try:
        ws = await RawWebSocket.connect("127.0.0.1", port, "/chat", headers)
    except HandshakeRefused as refused:
        return refused.status
    await ws.close()
    return 101


async def test_one_address_flooding_handshakes_leaves_other_addresses_the_connect_hook(
    hooked: tuple[Any, int],
) -> None:
    node, port = hooked
    backend = SlowBackend(
        lambda body: "attacker" if body["client_address"] == ATTACKER_ADDRESS else "victim"
    )
    request = handshake_request(
        "127.0.0.1", node.port, "/chat", [("X-Forwarded-For", ATTACKER_ADDRESS)]
    )
    sockets: list[asyncio.StreamWriter] = []
    try:
        async with HookServer(port, backend.answer):
            for _ in range(ATTACK_HANDSHAKES):  # written, never awaited: the flood
                _, writer = await asyncio.open_connection("127.0.0.1", node.port)
                writer.write(request)
                sockets.append(writer)
            await asyncio.wait_for(backend.attacker_busy.wait(), scaled(10))
            statuses = await asyncio.gather(
                *(
                    handshake_status(
                        node.port,
                        [("X-Forwarded-For", f"198.51.100.{i + 1}"), ("Cookie", "session=ok")],
                    )
                    for i in range(VICTIMS)
                )
            )
    finally:
        for writer in sockets:
            with contextlib.suppress(ConnectionError, RuntimeError):
                writer.close()
    refused = [status for status in statuses if status != 101]
    figures = (
        f"one address opened {ATTACK_HANDSHAKES} handshakes at once: {len(refused)} of {VICTIMS} "
        f"logged-in users of other addresses refused ({refused}); the attacker's connect calls "
        f"in flight at the backend peaked at {backend.peak['attacker']} (slots: {HOOK_SLOTS})"
    )
    print(figures)
    assert not refused, figures
    assert backend.peak["attacker"] <= CLIENT_SHARE, figures


DENYING_CONNECTIONS = 32  # of one user, each asking 20 joins the backend denies (its burst)
DENIED_JOINS_EACH = 20
# What one user may make the node ask about joins it is denied: each connection's first (they
# are asked together, before any denial is counted), then the client's join burst (40) and
# rate (5/s). Bounded at 100 (before: every one of 640).
DENIED_CALLS_FROM_ONE_USER = 100


async def test_one_user_cannot_make_the_node_ask_about_denied_joins_without_end(
    hooked: tuple[Any, int],
) -> None:
    node, port = hooked

    async def deny_vip(path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        if body["room"].startswith("vip"):
            return verdict({"result": "deny", "reason": "members only"})
        return verdict({"result": "allow"})

    attack = f"/chat?token={sign(sub='mallory')}"
    attackers = [
        await RawWebSocket.connect("127.0.0.1", node.port, attack)
        for _ in range(DENYING_CONNECTIONS)
    ]
    tag = uuid.uuid4().hex[:6]
    try:
        async with HookServer(port, deny_vip) as backend:
            for index, ws in enumerate(attackers):
                ws.send_bytes(
                    b"".join(
                        text({"type": "join", "room": f"vip{tag}-{index}-{k}", "id": f"d{k}"})
                        for k in range(DENIED_JOINS_EACH)
                    )
                )
            for ws in attackers:  # every join answered: denied, or refused before asking
                await answer_to(ws, f"d{DENIED_JOINS_EACH - 1}")
            answers = Counter(
                str(event.get("code"))
                for ws in attackers
                for event in ws.received.texts
                if str(event.get("id", "")).startswith("d")
            )
            asked = len(backend.hooks_called("join"))
    finally:
        for ws in attackers:
            await ws.close()
    figures = (
        f"one user's {DENYING_CONNECTIONS} connections sent {DENIED_JOINS_EACH} joins each that "
        f"the backend denies: it was asked {asked} times (bound {DENIED_CALLS_FROM_ONE_USER}); "
        f"answers {dict(answers)}"
    )
    print(figures)
    assert asked <= DENIED_CALLS_FROM_ONE_USER, figures
    assert answers["join_denied"] >= DENYING_CONNECTIONS, figures
