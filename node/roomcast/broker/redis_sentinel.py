"""Sentinel mode: the standalone topology, its links connected to whatever primary Sentinel names.

Each (re)connect of a link asks the sentinels for the current primary (redis-py's
``SentinelConnectionPool``), so after a failover the links, cut off from the dead primary,
come back on the promoted replica: the subscriber resubscribes every room with local members and
the node, seeing the broker ready again, resyncs its presence (``on_resync``). A link still talking
to a demoted primary is told ``READONLY`` on its next write, which redis-py turns into a
connection error: it reconnects through Sentinel too.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Unpack

from redis.asyncio.connection import ConnectionPool, SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

from roomcast.broker import MessageHandler, StateHandler, scripts
from roomcast.broker.links import connection_options
from roomcast.broker.redis import DEFAULT_TIMEOUT, RedisBroker, RedisOptions, Standalone


def parse_sentinels(items: Sequence[str]) -> list[tuple[str, int]]:
    addresses = []
    for item in items:
        host, _, port = item.strip().rpartition(":")
        addresses.append((host.strip("[]"), int(port)))
    return addresses


def primary_options(url: str | None) -> dict[str, Any]:
    """Password, user name, database and TLS for the primary, from an optional URL."""
    if url is None:
        return {}
    template = ConnectionPool.from_url(url)
    options = {
        key: value
        for key, value in template.connection_kwargs.items()
        if key not in ("host", "port", "connection_class")
    }
    if issubclass(template.connection_class, SSLConnection):
        options["ssl"] = True
    return options


class SentinelPrimary(Standalone):
    """The standalone topology on the primary Sentinel names, with scripts that give a room a
    new epoch when it was last written under another primary (``scripts.FENCED``)."""

    scripts: scripts.ScriptSet = scripts.FENCED


class RedisSentinelBroker(RedisBroker):
    """The Redis broker over one standalone topology on the primary Sentinel names."""

    def __init__(
        self,
        sentinels: Sequence[str],
        master: str,
        on_message: MessageHandler,
        on_state: StateHandler | None = None,
        *,
        url: str | None = None,
        sentinel_username: str | None = None,
        sentinel_password: str | None = None,
        **options: Unpack[RedisOptions],
    ) -> None:
        timeout = options.get("timeout", DEFAULT_TIMEOUT)
        sentinel_options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            # No retries inside redis-py (its default spent ~4 s per sentinel on a refused
            # password, past our connect timeout, so the log said only "TimeoutError"): the
            # next sentinel is asked at once, and the link's own backoff retries the whole.
            "retry": Retry(NoBackoff(), 0),
        }
        # The sentinels' own password (their requirepass), which is not the primary's: that
        # one comes from ``url``.
        if sentinel_password is not None:
            sentinel_options["password"] = sentinel_password
            sentinel_options["username"] = sentinel_username
        self._sentinel = Sentinel(  # type: ignore[no-untyped-call]
            parse_sentinels(sentinels), sentinel_kwargs=sentinel_options
        )
        self._pool = SentinelConnectionPool(  # type: ignore[no-untyped-call]
            master, self._sentinel, **connection_options(timeout), **primary_options(url)
        )
        topology = functools.partial(SentinelPrimary, self._pool, timeout, options.get("reconnect"))
        super().__init__(url or "", on_message, on_state, topology=topology, **options)

    async def stop(self) -> None:
        await super().stop()
        await self._sentinel.aclose()
