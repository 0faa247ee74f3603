"""A request's timeout after the node itself stalled (SIGSTOP, a paused VM, a long loop turn).

When the loop comes back, libuv runs due timers before it polls the sockets: a reply that
arrived during the stall is still unread when the request's timer fires. Failed then, a join
whose script ran in Redis was answered ``unavailable`` while Redis listed the member and told
the room it joined (a ghost member).
``within`` gives such a late timer one short grace for what the sockets already hold."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
import uvloop

from roomcast.broker import BrokerUnavailable, within

TIMEOUT = 0.05


async def _read_replies(reader: asyncio.StreamReader, future: asyncio.Future[bytes]) -> None:
    """As a Redis link's read loop does: a task reading the stream, which answers requests."""
    data = await reader.read(1 << 16)
    if data and not future.done():
        future.set_result(data)


async def _request_across_a_stall(stall: float, answer: bool) -> bytes:
    loop = asyncio.get_running_loop()
    ours, redis = socket.socketpair()
    future: asyncio.Future[bytes] = loop.create_future()
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    read_loop = asyncio.ensure_future(_read_replies(reader, future))
    try:
        waiting = asyncio.ensure_future(within(loop, future, TIMEOUT, "redis did not answer"))
        await asyncio.sleep(0)  # the request is out and its timer armed
        if answer:
            redis.send(b"+OK\r\n")  # Redis answers at once...
        time.sleep(stall)  # ...while the node is stopped: nothing reads it yet
        return await waiting
    finally:
        read_loop.cancel()
        writer.close()
        redis.close()


def test_a_reply_that_came_during_the_nodes_own_stall_is_read() -> None:
    assert uvloop.run(_request_across_a_stall(stall=TIMEOUT * 6, answer=True)) == b"+OK\r\n"


def test_a_request_nobody_answered_still_fails_after_a_stall() -> None:
    with pytest.raises(BrokerUnavailable, match="redis did not answer"):
        uvloop.run(_request_across_a_stall(stall=TIMEOUT * 6, answer=False))


def test_a_request_nobody_answered_fails_on_time() -> None:
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        uvloop.run(_request_across_a_stall(stall=0, answer=False))
    assert time.monotonic() - started < TIMEOUT * 20
