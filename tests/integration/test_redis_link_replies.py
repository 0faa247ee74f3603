"""The Redis links read their replies straight from redis-py's hiredis parser (REAL redis-server):
every reply settles its own command in order, refusals and errors as before, a reply larger than
one read is put together, and a connection Redis closes is made again."""

from __future__ import annotations

import asyncio

from redis.asyncio.connection import ConnectionPool
from roomcast_dev.devcluster import timeout_factor

from roomcast.broker import BrokerUnavailable, resp
from roomcast.broker.links import (
    CommandLink,
    Endpoint,
    ReconnectDelay,
    SubscriberLink,
    connection_options,
    hiredis_reader,
)
from roomcast.broker.redis import CLASSIC_PUBSUB, channel_for

TIMEOUT = 5.0 * timeout_factor()


def _endpoint(url: str) -> Endpoint:
    pool = ConnectionPool.from_url(url, **connection_options(TIMEOUT))
    return Endpoint(pool, TIMEOUT, ReconnectDelay(0.01, 0.05))


async def _until(check: object, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while not check():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never {what}")
        await asyncio.sleep(0.01)


async def test_pipelined_replies_settle_their_commands_in_order(redis_url: str) -> None:
    link = CommandLink("publisher", _endpoint(redis_url), ())
    link.start()
    try:
        await _until(lambda: link.connected, "connected")
        # The installed redis-py is read directly (if this fails, redis-py's internals changed:
        # the links still work through read_response, but the setup costs more again).
        assert link._conn is not None and hiredis_reader(link._conn) is not None
        key = b"rc:test:replies"
        await link.request(resp.command(b"DEL", key))
        requests = []
        for i in range(60):
            # Every third one is refused by Redis: it fails alone, the others keep their order.
            data = resp.command(b"NOSUCHCOMMAND") if i % 3 == 2 else resp.command(b"INCR", key)
            requests.append(asyncio.ensure_future(link.request(data)))
        outcomes = await asyncio.gather(*requests, return_exceptions=True)
        counted = [o for o in outcomes if not isinstance(o, BaseException)]
        refused = [o for o in outcomes if isinstance(o, BrokerUnavailable)]
        assert counted == list(range(1, 41))
        assert len(refused) == 20 and all("refused" in str(o) for o in refused)
        # A reply far larger than one read (64 KiB) is put together across reads.
        value = bytes(range(256)) * 8192  # 2 MiB
        assert await link.request(resp.command(b"SET", key, value)) == b"OK"
        assert await link.request(resp.command(b"GET", key)) == value
        await link.request(resp.command(b"DEL", key))
    finally:
        await link.stop()


async def test_a_subscriber_closed_by_redis_reconnects_and_hears_its_rooms_again(
    redis_url: str,
) -> None:
    heard: list[tuple[str, bytes]] = []
    subscriber = SubscriberLink(
        "subscriber",
        _endpoint(redis_url),
        CLASSIC_PUBSUB,
        lambda room, payload: heard.append((room, payload)),
        lambda room: None,
    )
    commands = CommandLink("publisher", _endpoint(redis_url), ())
    subscriber.start()
    commands.start()
    try:
        await _until(lambda: subscriber.connected and commands.connected, "connected")
        channel = channel_for("replies")
        await subscriber.subscribe(channel)
        await commands.request(resp.command(b"PUBLISH", channel, b"one"))
        await _until(lambda: heard == [("replies", b"one")], "heard the first message")
        # Redis closes the subscriber's connection: the read loop ends, the link comes back and
        # subscribes its rooms again.
        killed = await commands.request(resp.command(b"CLIENT", b"KILL", b"TYPE", b"pubsub"))
        assert killed == 1
        await _until(lambda: subscriber.reconnects == 1, "noticed the closed connection")
        await _until(lambda: channel in subscriber.confirmed, "resubscribed")
        await commands.request(resp.command(b"PUBLISH", channel, b"two"))
        await _until(lambda: heard[-1:] == [("replies", b"two")], "heard the second message")
    finally:
        await subscriber.stop()
        await commands.stop()
