"""The node as a process: configuration errors, logs, compression, and `make run`'s launcher."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from roomcast_dev.devcluster import LocalCluster, ManagedProcess, free_port
from websockets.exceptions import InvalidStatus

from roomcast.core.auth import issue_token
from tests.support.cluster import ready
from tests.support.wsclient import Client, scaled

pytestmark = pytest.mark.integration


def test_bad_configuration_stops_the_node_with_a_clear_message() -> None:
    env = dict(
        os.environ,
        ROOMCAST_PORT="eighty",
        ROOMCAST_REDIS_URL="http://nope",
        ROOMCAST_PING_INTERVAL="-1",
    )
    result = subprocess.run(
        [sys.executable, "-m", "roomcast"],
        env=env,
        capture_output=True,
        text=True,
        timeout=scaled(30),
        check=False,
    )
    assert result.returncode == 2
    for name in ("ROOMCAST_PORT", "ROOMCAST_REDIS_URL", "ROOMCAST_PING_INTERVAL"):
        assert name in result.stderr


async def test_logs_are_json_lines_without_message_texts() -> None:
    secret = "private-" + uuid.uuid4().hex
    with LocalCluster(1, redis=False, nginx=False) as cluster:
        node = cluster.nodes[0]
        alice, bob = await Client.connect(node.url), await Client.connect(node.url)
        await alice.join("logs", "alice")
        await bob.join("logs", "bob")
        await alice.send(type="message", text=secret)
        await bob.recv_type("message", text=secret)
        await alice.send_raw("{broken " + secret)
        await alice.recv_type("error")
        await alice.close()
        await bob.close()
        node.process.stop()
        lines = node.process.lines
    assert lines, "the node logged nothing"
    for line in lines:
        entry = json.loads(line)  # every line is one JSON object
        assert {"ts", "level", "event", "node"} <= entry.keys()
        assert secret not in line
    assert any(json.loads(line)["event"] == "listening" for line in lines)


@pytest.mark.parametrize("compression", [False, True])
async def test_permessage_deflate_is_off_by_default_and_works_when_enabled(
    compression: bool,
) -> None:
    env = {"ROOMCAST_COMPRESSION": "true"} if compression else {}
    with LocalCluster(2, nginx=False, node_env=env) as cluster:
        # websockets' client offers permessage-deflate, as browsers do.
        alice = await Client.connect(cluster.nodes[0].url)
        bob = await Client.connect(cluster.nodes[1].url)
        try:
            handshake = alice.ws.response
            assert handshake is not None  # set once the opening handshake is done
            negotiated = handshake.headers.get("Sec-WebSocket-Extensions")
            if compression:
                assert negotiated is not None and "permessage-deflate" in negotiated
            else:
                assert negotiated is None
            await alice.join("deflate", "alice")
            await bob.join("deflate", "bob")
            text = "compressible " * 500
            for index in range(5):
                await bob.send(type="message", text=f"{index} {text}")
            for index in range(5):
                got = await alice.recv_type("message")
                assert got["text"] == f"{index} {text}"
        finally:
            await alice.close()
            await bob.close()


@contextmanager
def make_run_launcher(**settings: str) -> Iterator[tuple[ManagedProcess, int]]:
    """`make run`'s launcher on a port of its own, once it printed its URLs; stopped after."""
    port = free_port()
    launcher = ManagedProcess(
        "devcluster",
        [sys.executable, "-m", "roomcast_dev.devcluster", "--port", str(port)],
        dict(os.environ, **settings),
    )
    try:
        launcher.wait_for_line(lambda line: "Press Ctrl-C to stop." in line, 60)
        yield launcher, port
    finally:
        launcher.stop()


async def test_make_run_launcher_starts_everything_and_stops_it_on_ctrl_c() -> None:
    with make_run_launcher() as (launcher, port):
        assert any(f"http://127.0.0.1:{port}/" in line for line in launcher.lines)
        children = _descendants(launcher.pid)
        assert len(children) >= 5  # redis, 3 nodes, nginx (master)
        client = await Client.connect(f"ws://127.0.0.1:{port}/chat")
        await client.join("launcher", "me")
        await client.close()
        launcher.popen.send_signal(signal.SIGINT)
        assert launcher.popen.wait(scaled(30)) == 0
        still_running = [pid for pid in children if os.path.exists(f"/proc/{pid}")]
        assert still_running == [] or all(_is_zombie(pid) for pid in still_running)


async def test_make_run_launcher_carries_on_when_a_node_it_printed_is_killed() -> None:
    # docs/quickstart.md: "Stop a node (`kill -9` one of the PIDs `make run` printed) and watch
    # the page reconnect to another one". The launcher printed no PID, and stopped everything
    # when a node exited.
    with make_run_launcher() as (launcher, port):
        printed = [
            re.match(r"\s+(node-\d+): ws://.*\(pid (\d+)\)$", line) for line in launcher.lines
        ]
        pids = {match.group(1): int(match.group(2)) for match in printed if match}
        assert sorted(pids) == ["node-1", "node-2", "node-3"], launcher.lines
        url = f"ws://127.0.0.1:{port}/chat"
        victim = await Client.connect(url)
        os.kill(pids[victim.node], signal.SIGKILL)
        launcher.wait_for_line(lambda line: f"{victim.node} (pid " in line and "exited" in line, 30)
        assert await victim.expect_close() == (None, None)  # cut, not closed
        assert launcher.popen.poll() is None, launcher.tail()
        # A new connection lands on a node still running, through nginx, and chats.
        survivor = await Client.connect(url)
        assert survivor.node != victim.node
        await survivor.join("after-the-kill", "me")
        await survivor.send(type="message", text="still here")
        assert (await survivor.recv_type("message"))["text"] == "still here"
        await survivor.close()
        launcher.popen.send_signal(signal.SIGINT)
        assert launcher.popen.wait(scaled(30)) == 0


async def test_make_run_hands_the_operators_settings_to_its_nodes() -> None:
    # `ROOMCAST_AUTH_SECRET=… make run` (tokens for the page's `#token=`): the launcher dropped
    # every ROOMCAST_* variable, and its nodes ran open all the same, saying nothing.
    secret = secrets.token_hex(32)
    with make_run_launcher(ROOMCAST_AUTH_SECRET=secret, ROOMCAST_PORT="1") as (launcher, port):
        assert any("ROOMCAST_AUTH_SECRET" in line for line in launcher.lines), launcher.lines
        url = f"ws://127.0.0.1:{port}/chat"
        with pytest.raises(InvalidStatus) as refused:
            await Client.connect(url)
        assert refused.value.response.status_code == 401
        client = await Client.connect(f"{url}?token={issue_token(secret, 'ann')}")
        joined = await client.join("with-tokens", "someone else")
        assert joined["username"] == "ann"  # the token's name, not the join's
        await client.close()


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        for task in os.listdir(f"/proc/{current}/task"):
            try:
                with open(f"/proc/{current}/task/{task}/children") as children:
                    kids = [int(k) for k in children.read().split()]
            except FileNotFoundError:
                continue
            found.extend(kids)
            pending.extend(kids)
    return found


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _stuck_websocket(port: int) -> socket.socket:
    """A client that completes the handshake and then never reads: the drain waits for it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
    sock.sendall(
        b"GET /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert sock.recv(4096).startswith(b"HTTP/1.1 101")
    return sock


def test_a_second_signal_ends_a_drain_at_once() -> None:
    # A drain that would take a minute: the operator's second Ctrl-C / SIGTERM must not wait.
    env = {"ROOMCAST_DRAIN_TIMEOUT": "60"}
    with LocalCluster(1, redis=False, nginx=False, node_env=env) as cluster:
        process = cluster.nodes[0].process
        stuck = _stuck_websocket(cluster.nodes[0].port)
        try:
            process.signal(signal.SIGTERM)
            process.wait_for_line(lambda line: '"event":"draining"' in line, timeout=10)
            assert process.alive()  # still draining: the stuck client has not closed
            process.signal(signal.SIGTERM)
            assert process.popen.wait(scaled(10)) == 128 + signal.SIGTERM
        finally:
            stuck.close()
    assert any("second signal" in line for line in process.lines)


async def test_the_public_port_opens_once_redis_is_up_so_first_joins_are_not_refused() -> None:
    """A node started before its Redis (a rolling update, a restart behind nginx) keeps its
    public port shut until the links are up, within ROOMCAST_REDIS_TIMEOUT: its first client's
    join is then answered, not refused with `unavailable: redis is not connected`."""
    env = {"ROOMCAST_REDIS_TIMEOUT": str(scaled(15))}
    cluster = LocalCluster(1, nginx=False, node_env=env)
    cluster.redis_port = free_port()
    try:
        starting = asyncio.create_task(asyncio.to_thread(cluster.start_node))
        # The node has tried Redis and found nobody: only now does Redis start.
        await asyncio.to_thread(lambda: _wait_for_node_line(cluster, '"redis connect failed"'))
        cluster.start_redis()
        node = await starting
        listening = next(line for line in node.process.lines if '"event":"listening"' in line)
        client = await Client.connect(node.url)
        await client.join("first", "alice")
        await client.close()
        assert json.loads(listening).get("ready") is True, listening
    finally:
        cluster.stop()


async def test_a_node_whose_redis_never_comes_still_opens_not_ready() -> None:
    """The wait for Redis is bounded: the port opens after ROOMCAST_REDIS_TIMEOUT, /readyz says
    503 and a join is refused with `unavailable` (until Redis comes), instead of a node that
    never serves at all."""
    env = {"ROOMCAST_REDIS_TIMEOUT": "1"}
    cluster = LocalCluster(1, nginx=False, node_env=env)
    cluster.redis_port = free_port()  # nobody listens there
    try:
        node = await asyncio.to_thread(cluster.start_node)
        listening = next(line for line in node.process.lines if '"event":"listening"' in line)
        assert json.loads(listening)["ready"] is False, listening
        assert not ready(node)
        client = await Client.connect(node.url)
        await client.send(type="join", room="later", username="alice")
        refusal = await client.recv_type("error")
        assert refusal["code"] == "unavailable", refusal
        await client.close()
    finally:
        cluster.stop()


def _wait_for_node_line(cluster: LocalCluster, text: str) -> None:
    # The node's process exists as soon as start_node has spawned it (it then waits for
    # "listening" on its own thread).
    deadline = time.monotonic() + scaled(20)
    while not cluster.nodes:
        if time.monotonic() > deadline:
            raise AssertionError("the node was never spawned")
        time.sleep(0.01)
    cluster.nodes[0].process.wait_for_line(lambda line: text in line, 20)
