"""The hooks' HTTP client (roomcast.net.hook_client) against real sockets: a real h11 hook server
and raw TCP servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from roomcast_dev.devcluster import free_port
from roomcast_dev.hookserver import HookServer, verdict

from roomcast.core.hooks import HookCallFailed
from roomcast.net.hook_client import HookClient
from tests.support.wsclient import scaled

pytestmark = pytest.mark.integration


@asynccontextmanager
async def raw_server(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    """A TCP server that answers however ``handle`` likes (or not at all)."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        server.close()


async def test_keeps_one_connection_alive_across_calls() -> None:
    connections = 0

    async def answer(path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        return verdict({"result": "allow", "echo": body["n"]})

    port = free_port()
    async with HookServer(port, answer) as hooks:
        original = hooks._serve

        async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            await original(reader, writer)

        await hooks.stop()
        hooks._server = await asyncio.start_server(counted, "127.0.0.1", port)
        client = HookClient(secret="s" * 32, max_response_bytes=1024)
        for n in range(3):
            status, body = await client.post(f"{hooks.url}/hooks/join?x=1", b'{"n": %d}' % n)
            assert (status, body) == (200, b'{"result":"allow","echo":%d}' % n)
        assert connections == 1
        path, _, headers = hooks.calls[0]
        assert path == "/hooks/join?x=1"
        assert headers["authorization"] == "Bearer " + "s" * 32
        assert headers["content-type"] == "application/json"
        client.close()


async def test_a_refused_connection_is_not_sent() -> None:
    client = HookClient(secret=None, max_response_bytes=1024)
    with pytest.raises(HookCallFailed) as failed:
        await client.post(f"http://127.0.0.1:{free_port()}/hook", b"{}")
    assert failed.value.sent is False


async def test_an_answer_too_large_or_cut_short_is_a_failure_after_sending() -> None:
    async def too_large(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000)
        await writer.drain()

    async def cut_short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")
        await writer.drain()
        writer.close()

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        writer.close()

    client = HookClient(secret=None, max_response_bytes=1024)
    for handler in (too_large, cut_short, garbage):
        async with raw_server(handler) as url:
            with pytest.raises(HookCallFailed) as failed:
                await asyncio.wait_for(client.post(url, b"{}"), scaled(5))
            assert failed.value.sent is True, handler.__name__


@pytest.mark.parametrize("says_close", [True, False])
async def test_a_connection_the_server_closes_is_not_reused(says_close: bool) -> None:
    served = 0
    closed = asyncio.Event()

    async def one_answer_then_close(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        nonlocal served
        served += 1
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        body = b'{"result":"allow"}'
        close = b"Connection: close\r\n" if says_close else b""
        writer.write(
            b"HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n%s" % (close, len(body), body)
        )
        await writer.drain()
        writer.close()  # without the header: the client only sees EOF while idle
        await writer.wait_closed()
        closed.set()

    client = HookClient(secret=None, max_response_bytes=1024)
    async with raw_server(one_answer_then_close) as url:
        assert (await client.post(url, b"{}"))[0] == 200
        await closed.wait()
        # Loop turns (not time) until the idle connection has read the server's FIN.
        for _ in range(1000):
            idle = [link for links in client._idle.values() for link in links]
            if all(link.reader.at_eof() for link in idle):
                break
            await asyncio.sleep(0)
        assert (await client.post(url, b"{}"))[0] == 200
    assert served == 2


async def test_a_cancelled_call_leaves_no_connection_to_reuse() -> None:
    release = asyncio.Event()

    async def stalls(path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        if body.get("stall"):
            await release.wait()
            return verdict({"result": "deny", "reason": "the late answer"})
        return verdict({"result": "allow"})

    port = free_port()
    async with HookServer(port, stalls) as hooks:
        client = HookClient(secret=None, max_response_bytes=1024)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.post(f"{hooks.url}/h", b'{"stall": true}'), 0.2)
        # The next call must not read the stalled call's late answer on the same connection.
        release.set()
        assert await client.post(f"{hooks.url}/h", b"{}") == (200, b'{"result":"allow"}')
        client.close()
