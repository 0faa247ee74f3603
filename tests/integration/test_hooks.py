"""The application's hooks against REAL node processes and a real HTTP hook server (in the test).

Hooks that answer, deny and rewrite; hooks that are down, slow or erroring under both fail modes;
the circuit breaker opening and closing again; and a slow hook never holding up other clients.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from roomcast_dev.devcluster import LocalCluster, NodeProcess, free_port, timeout_factor
from roomcast_dev.hookserver import HookServer, verdict
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from roomcast.core.auth import issue_token
from tests.support.cluster import FAST_ENV, http_get, metric_value
from tests.support.wsclient import Client, scaled

pytestmark = pytest.mark.integration

SECRET = "hooks-test-secret-" + "s" * 32
HOOK_SECRET = "hook-shared-secret-" + "h" * 32
# Short, so that "slow" is quick to prove; scaled like every other wait on a slow machine.
HOOK_TIMEOUT = 0.5 * timeout_factor()


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    """Node processes of one's own (in-memory broker: the hooks are per node)."""
    with LocalCluster(0, redis=False, nginx=False, node_env=FAST_ENV) as running:
        yield running


def hook_env(port: int, **extra: str) -> dict[str, str]:
    base = f"http://127.0.0.1:{port}"
    env = {
        "ROOMCAST_HOOK_CONNECT_URL": f"{base}/hooks/connect",
        "ROOMCAST_HOOK_JOIN_URL": f"{base}/hooks/join",
        "ROOMCAST_HOOK_PUBLISH_URL": f"{base}/hooks/publish",
        "ROOMCAST_HOOK_JOIN_ROOMS": "lobby,vip,mod:*",
        "ROOMCAST_HOOK_PUBLISH_ROOMS": "lobby,mod:*",
        "ROOMCAST_HOOK_TIMEOUT": str(HOOK_TIMEOUT),
        "ROOMCAST_HOOK_SECRET": HOOK_SECRET,
        "ROOMCAST_AUTH_SECRET": SECRET,
    }
    env.update(extra)
    return env


def metrics(node: NodeProcess) -> str:
    return http_get(f"{node.metrics_url}/metrics")[1]


def hook_calls(node: NodeProcess, hook: str, result: str) -> float:
    labels = {"hook": hook, "result": result}
    return metric_value(metrics(node), "roomcast_hook_calls_total", labels)


def user_token(subject: str, name: str) -> str:
    return issue_token(SECRET, subject, name=name)


async def session_client(node: NodeProcess, session: str) -> Client:
    return await Client.connect(node.url, additional_headers={"Cookie": f"session={session}"})


async def backend(path: str, body: dict[str, Any]) -> tuple[int, bytes]:
    """A well-behaved application: sessions, a members-only room, a word filter."""
    hook = body["hook"]
    if hook == "connect":
        cookie = body["headers"].get("cookie", "")
        if cookie == "session=ann-session":
            return verdict({"result": "allow", "user": "u-ann", "name": "Ann", "rooms": ["*"]})
        if cookie == "session=bob-session":
            return verdict({"result": "allow", "user": "u-bob", "name": "Bob", "rooms": ["lobby"]})
        return verdict({"result": "deny", "reason": "log in first"})
    if hook == "join":
        if body["room"] == "vip" and body["user"] != "u-ann":
            return verdict({"result": "deny", "reason": "vip is for Ann"})
        return verdict({"result": "allow", "data": {"topic": f"welcome to {body['room']}"}})
    text = body["text"]
    if "spam" in text:
        return verdict({"result": "deny", "reason": "no spam"})
    if "darn" in text:
        return verdict({"result": "rewrite", "text": text.replace("darn", "d**n")})
    return verdict({"result": "allow"})


async def test_connect_hook_gives_identity_and_rooms_from_the_cookie(
    cluster: LocalCluster,
) -> None:
    port = free_port()
    node = cluster.start_node(hook_env(port))
    async with HookServer(port, backend) as hooks:
        ann = await session_client(node, "ann-session")
        joined = await ann.join("lobby", "ignored")
        assert joined["username"] == "Ann"  # the hook's name, not the one the client sent
        call = hooks.hooks_called("connect")[0]
        assert call["headers"]["cookie"] == "session=ann-session"
        assert call["client_address"] == "127.0.0.1"
        # The node authenticates itself to the backend with the shared secret.
        assert all(h["authorization"] == f"Bearer {HOOK_SECRET}" for _, _, h in hooks.calls)
        bob = await session_client(node, "bob-session")
        await bob.send(type="join", room="other")
        refused = await bob.recv_type("error")
        assert refused["code"] == "forbidden"  # outside the rooms the hook granted
        with pytest.raises(InvalidStatus) as denied:
            await connect(node.url, additional_headers={"Cookie": "session=stolen"})
        assert denied.value.response.status_code == 403
        assert b"log in first" in denied.value.response.body
        # A JWT still works beside the hook, and does not call it.
        connects = len(hooks.hooks_called("connect"))
        carol = await Client.connect(f"{node.url}?token={user_token('u-c', 'carol')}")
        assert (await carol.join("lobby", "x"))["username"] == "carol"
        assert len(hooks.hooks_called("connect")) == connects
        assert hook_calls(node, "connect", "deny") == 1
        for client in (ann, bob, carol):
            await client.close()


async def test_join_hook_denies_with_a_reason_and_gives_initial_data(
    cluster: LocalCluster,
) -> None:
    port = free_port()
    node = cluster.start_node(hook_env(port))
    async with HookServer(port, backend) as hooks:
        bob = await session_client(node, "bob-session")
        await bob.send(type="join", room="lobby", id=1)
        joined = await bob.recv_type("joined")
        assert joined["data"] == {"topic": "welcome to lobby"}
        assert hooks.hooks_called("join")[0] == {
            "hook": "join",
            "node": "node-1",
            "connection": bob.connection_id,
            "room": "lobby",
            "user": "u-bob",
            "username": "Bob",
            "client_address": "127.0.0.1",
        }
        ann = await session_client(node, "ann-session")
        await ann.send(type="join", room="free")  # not a hooked room: no call, no data
        assert "data" not in await ann.recv_type("joined", room="free")
        assert len(hooks.hooks_called("join")) == 1
        await bob.close()
        # Bob's token allows vip; the hook still says no.
        bob = await Client.connect(f"{node.url}?token={user_token('u-bob', 'bob')}")
        await bob.send(type="join", room="vip", id=7)
        error = await bob.recv_type("error")
        assert error == {
            "type": "error",
            "code": "join_denied",
            "reason": "vip is for Ann",
            "room": "vip",
            "id": 7,
        }
        # Denied before anything happened: the room never saw Bob.
        await ann.send(type="join", room="vip")
        await ann.recv_type("joined", room="vip")
        await ann.send(type="presence", room="vip")
        members = (await ann.recv_type("presence"))["members"]
        assert [member["username"] for member in members] == ["Ann"]
        await ann.close()
        await bob.close()


async def test_publish_hook_rewrites_and_denies_before_the_offset(cluster: LocalCluster) -> None:
    port = free_port()
    node = cluster.start_node(hook_env(port))
    async with HookServer(port, backend) as hooks:
        ann = await session_client(node, "ann-session")
        bob = await session_client(node, "bob-session")
        await ann.join("lobby", "a")
        await bob.join("lobby", "b")
        await ann.send(type="message", room="lobby", text="well darn it", id="m1")
        ack = await ann.recv_type("ack")
        seen = await bob.recv_type("message")
        assert seen["text"] == "well d**n it"
        assert seen["offset"] == ack["offset"]
        await ann.send(type="message", room="lobby", text="buy spam", id="m2")
        error = await ann.recv_type("error")
        assert (error["code"], error["reason"], error["id"]) == ("publish_denied", "no spam", "m2")
        await ann.send(type="message", room="lobby", text="after", id="m3")
        after = await bob.recv_type("message")
        # The denied message never got an offset: the next one follows the rewritten one.
        assert (after["text"], after["offset"]) == ("after", seen["offset"] + 1)
        calls = hooks.hooks_called("publish")
        assert [c["text"] for c in calls] == ["well darn it", "buy spam", "after"]
        assert len({c["message_id"] for c in calls}) == 3
        # The event carries the id the hook was given: the backend ties offsets to its rows.
        assert seen["message_id"] == calls[0]["message_id"]
        assert after["message_id"] == calls[2]["message_id"]
        assert calls[0]["user"] == "u-ann" and calls[0]["room"] == "lobby"
        assert hook_calls(node, "publish", "rewrite") == 1
        assert hook_calls(node, "publish", "deny") == 1
        await ann.close()
        await bob.close()


async def test_hook_down_in_both_fail_modes(cluster: LocalCluster) -> None:
    port = free_port()  # nothing listens there: every call is refused
    closed = cluster.start_node(hook_env(port))
    opened = cluster.start_node(
        hook_env(port, ROOMCAST_HOOK_JOIN_FAIL_MODE="open", ROOMCAST_HOOK_PUBLISH_FAIL_MODE="open")
    )
    token = user_token("u-d", "dana")
    for node in (closed, opened):
        with pytest.raises(InvalidStatus) as refused:
            await connect(node.url, additional_headers={"Cookie": "session=x"})
        # The connect hook is always fail-closed: no identity can be made up.
        assert refused.value.response.status_code == 503
        assert b"connect hook failed (unreachable)" in refused.value.response.body
    client = await Client.connect(f"{closed.url}?token={token}")
    await client.send(type="join", room="lobby", id=1)
    error = await client.recv_type("error")
    assert (error["code"], error["room"]) == ("hook_unavailable", "lobby")
    assert error["reason"] == "the application's join hook failed (unreachable)"
    await client.join("free", "d")  # rooms outside the hook's patterns are unaffected
    await client.close()
    client = await Client.connect(f"{opened.url}?token={token}")
    await client.join("lobby", "d")
    await client.send(type="message", room="lobby", text="still here", id=2)
    assert (await client.recv_type("message"))["text"] == "still here"
    await client.close()
    assert hook_calls(closed, "join", "unreachable") == 1
    assert hook_calls(opened, "publish", "unreachable") == 1


async def test_slow_hook_times_out_and_never_holds_up_other_clients(
    cluster: LocalCluster,
) -> None:
    port = free_port()
    release = asyncio.Event()

    async def slow(path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        await release.wait()
        return verdict({"result": "allow"})

    closed = cluster.start_node(hook_env(port, ROOMCAST_HOOK_RETRIES="0"))
    opened = cluster.start_node(
        hook_env(port, ROOMCAST_HOOK_JOIN_FAIL_MODE="open", ROOMCAST_HOOK_RETRIES="0")
    )
    token = user_token("u-e", "eve")
    async with HookServer(port, slow) as hooks:
        for node, fail_mode in ((closed, "closed"), (opened, "open")):
            waiting = await Client.connect(f"{node.url}?token={token}")
            await waiting.join("free", "e")
            await waiting.send(type="join", room="mod:1", id="j")
            other = await Client.connect(f"{node.url}?token={user_token('u-f', 'fay')}")
            await other.join("free", "f")
            # While the hook stalls the join, the node keeps serving everyone else.
            started = time.monotonic()
            await other.send(type="message", room="free", text="ping", id="p")
            await other.recv_type("ack", id="p")
            assert time.monotonic() - started < HOOK_TIMEOUT
            if fail_mode == "closed":
                answer = await waiting.recv_type("error", id="j")
                assert answer["code"] == "hook_unavailable"
                assert "(timeout)" in answer["reason"]
            else:
                answer = await waiting.recv_type("joined", id="j")
                assert answer["room"] == "mod:1"
            elapsed = time.monotonic() - started
            assert elapsed < HOOK_TIMEOUT + scaled(2)
            await waiting.close()
            await other.close()
        assert len(hooks.hooks_called("join")) == 2
        release.set()
    assert hook_calls(closed, "join", "timeout") == 1


async def test_erroring_hook_in_both_fail_modes(cluster: LocalCluster) -> None:
    port = free_port()
    answers = iter([(500, b"oops"), (200, b"not json"), (200, b'{"result": "perhaps"}')] * 4)

    async def broken(path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        return next(answers)

    closed = cluster.start_node(hook_env(port, ROOMCAST_HOOK_RETRIES="0"))
    opened = cluster.start_node(
        hook_env(port, ROOMCAST_HOOK_JOIN_FAIL_MODE="open", ROOMCAST_HOOK_RETRIES="0")
    )
    async with HookServer(port, broken):
        refused = await Client.connect(f"{closed.url}?token={user_token('u-g', 'gus')}")
        for request_id in range(3):
            await refused.send(type="join", room="lobby", id=request_id)
            error = await refused.recv_type("error", id=request_id)
            assert error["code"] == "hook_unavailable" and "(error)" in error["reason"]
        let_in = await Client.connect(f"{opened.url}?token={user_token('u-h', 'hal')}")
        for room in ("lobby", "vip", "mod:2"):
            joined = await let_in.join(room, "h")
            assert "data" not in joined
        await refused.close()
        await let_in.close()
    assert hook_calls(closed, "join", "error") == 3
    assert hook_calls(opened, "join", "error") == 3


async def test_circuit_breaker_opens_and_recovers(cluster: LocalCluster) -> None:
    port = free_port()
    healthy = False

    async def flaky(path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        return verdict({"result": "allow"}) if healthy else (503, b"{}")

    reset = 1.0 * timeout_factor()
    node = cluster.start_node(
        hook_env(
            port,
            ROOMCAST_HOOK_RETRIES="0",
            ROOMCAST_HOOK_BREAKER_FAILURES="3",
            ROOMCAST_HOOK_BREAKER_RESET=str(reset),
        )
    )
    async with HookServer(port, flaky) as hooks:
        client = await Client.connect(f"{node.url}?token={user_token('u-i', 'ida')}")
        for request_id in range(5):
            await client.send(type="join", room="lobby", id=request_id)
            error = await client.recv_type("error", id=request_id)
            assert error["code"] == "hook_unavailable"
        # Three failures reached the backend; then the circuit opened and calls failed fast.
        assert len(hooks.calls) == 3
        assert hook_calls(node, "join", "circuit_open") == 2
        text = metrics(node)
        assert metric_value(text, "roomcast_hook_circuit_open", {"hook": "join"}) == 1
        healthy = True
        await client.send(type="join", room="lobby", id="still-open")
        error = await client.recv_type("error", id="still-open")
        assert "circuit_open" in error["reason"]  # a healthy backend is not asked before reset
        assert len(hooks.calls) == 3
        # What is tested is a duration: after it, one trial goes through and closes the circuit.
        await asyncio.sleep(reset)
        await client.send(type="join", room="lobby", id="trial")
        await client.recv_type("joined", id="trial")
        assert len(hooks.calls) == 4
        assert metric_value(metrics(node), "roomcast_hook_circuit_open", {"hook": "join"}) == 0
        await client.join("vip", "i")  # and it stays closed
        await client.close()
