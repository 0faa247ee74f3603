"""``roomcast chat`` as a REAL subprocess against a REAL cluster: one-shot --send, bad URLs, and
the interactive mode driven through a pipe and through a pseudo-terminal."""

from __future__ import annotations

import asyncio
import os
import pty
import sys
import uuid
from collections.abc import AsyncIterator

import pytest
from roomcast_dev.devcluster import LocalCluster, free_port

from roomcast.client import ChatMessage, RoomcastClient, Typing
from tests.support.wsclient import scaled

pytestmark = pytest.mark.integration


def new_room() -> str:
    return "chat-" + uuid.uuid4().hex[:10]


def chat_argv(url: str, room: str, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "roomcast", "chat", "--url", url, "--room", room,
            "--name", name, *extra]  # fmt: skip


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
    env.update(extra)
    return env


async def run_chat(*argv: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=child_env(),
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), scaled(30))
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def next_message(client: RoomcastClient, text: str, timeout: float = 10) -> ChatMessage:
    async with asyncio.timeout(scaled(timeout)):
        async for event in client:
            if isinstance(event, ChatMessage) and event.text == text:
                return event
    raise AssertionError(f"the client stopped before {text!r}: {client.closed}")


@pytest.fixture
async def listener(cluster: LocalCluster) -> AsyncIterator[tuple[RoomcastClient, str]]:
    room = new_room()
    async with RoomcastClient(cluster.nodes[0].url, "listener", rooms=[room]) as client:
        await client.join(room, timeout=scaled(10))
        yield client, room


async def test_send_one_shot_delivers_and_exits_0(
    cluster: LocalCluster, listener: tuple[RoomcastClient, str]
) -> None:
    client, room = listener
    code, out, err = await run_chat(*chat_argv(cluster.url, room, "script", "--send", "hi all"))
    assert code == 0, err
    received = await next_message(client, "hi all")
    assert received.username == "script"
    expected = f"delivered to {room} at offset {received.offset} (epoch {received.epoch})"
    assert out.strip() == expected


async def test_send_to_nothing_listening_fails_with_a_message() -> None:
    url = f"ws://127.0.0.1:{free_port()}/chat"
    code, out, err = await run_chat(*chat_argv(url, "r", "script", "--send", "lost"))
    assert code == 1 and out == ""
    assert err.startswith(f"roomcast chat: cannot chat on {url}: gave up after 2 attempts")
    assert "Traceback" not in err


async def test_send_with_a_url_that_is_not_websocket_is_a_usage_error() -> None:
    code, _, err = await run_chat(*chat_argv("http://127.0.0.1/chat", "r", "x", "--send", "t"))
    assert code == 2
    assert err.startswith("roomcast chat: not a WebSocket URL: 'http://127.0.0.1/chat'")


async def test_send_refused_join_fails_with_the_servers_reason(cluster: LocalCluster) -> None:
    code, _, err = await run_chat(*chat_argv(cluster.url, "bad room!", "x", "--send", "t"))
    assert code == 1
    assert "join of 'bad room!' refused: invalid_room" in err


class Output:
    """What a child wrote so far, awaited for a substring instead of slept for."""

    def __init__(self) -> None:
        self.text = ""
        self.changed = asyncio.Event()

    def add(self, chunk: str) -> None:
        self.text += chunk
        self.changed.set()

    async def wait_for(self, needle: str, timeout: float = 10) -> None:
        async with asyncio.timeout(scaled(timeout)):
            while needle not in self.text:
                self.changed.clear()
                await self.changed.wait()


async def test_interactive_through_a_pipe_prints_incoming_and_sends_lines(
    cluster: LocalCluster, listener: tuple[RoomcastClient, str]
) -> None:
    client, room = listener
    process = await asyncio.create_subprocess_exec(
        *chat_argv(cluster.url, room, "carol"), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=child_env(),
    )  # fmt: skip
    assert process.stdin is not None and process.stdout is not None
    output = Output()
    stdout = process.stdout

    async def pump() -> None:
        while chunk := await stdout.read(4096):
            output.add(chunk.decode())

    pumping = asyncio.create_task(pump())
    try:
        await output.wait_for(f"* you joined {room} as carol")
        await client.send(room, "hello carol")
        await output.wait_for("] listener: hello carol")
        process.stdin.write(b"hello listener\n/who\n")
        assert (await next_message(client, "hello listener")).username == "carol"
        await output.wait_for(f"* in {room}: carol, listener")
        process.stdin.write(b"/quit\n")
        assert await asyncio.wait_for(process.wait(), scaled(15)) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await pumping


async def test_interactive_in_a_terminal_prints_above_the_prompt_and_sends_typing(
    cluster: LocalCluster, listener: tuple[RoomcastClient, str]
) -> None:
    client, room = listener
    controller, terminal = pty.openpty()
    env = child_env(TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1", COLUMNS="120", LINES="30")
    process = await asyncio.create_subprocess_exec(
        *chat_argv(cluster.url, room, "dave"), stdin=terminal, stdout=terminal, stderr=terminal,
        env=env, start_new_session=True,
    )  # fmt: skip
    os.close(terminal)
    output = Output()
    loop = asyncio.get_running_loop()

    def readable() -> None:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the child is gone and the terminal hung up
            chunk = b""
        if not chunk:
            loop.remove_reader(controller)
            return
        output.add(chunk.decode(errors="replace"))

    loop.add_reader(controller, readable)
    try:
        await output.wait_for(f"{room}>")  # the space after it is a cursor move
        await output.wait_for("* you joined")
        await client.send(room, "printed above the prompt")
        await output.wait_for("listener: printed above the prompt")
        os.write(controller, b"typed in a terminal")
        # Keystrokes are announced as typing (throttled by the client), then Enter sends.
        async with asyncio.timeout(scaled(10)):
            async for event in client:
                if isinstance(event, Typing) and event.username == "dave":
                    break
        os.write(controller, b"\r")
        assert (await next_message(client, "typed in a terminal")).username == "dave"
        os.write(controller, b"/quit\r")
        assert await asyncio.wait_for(process.wait(), scaled(15)) == 0
    finally:
        loop.remove_reader(controller)
        if process.returncode is None:
            process.kill()
            await process.wait()
        os.close(controller)
