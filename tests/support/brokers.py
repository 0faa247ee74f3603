"""Redis brokers started by a test as a node starts its own: on a REAL redis-server, ready."""

from __future__ import annotations

import asyncio
from typing import Any

from roomcast.broker.redis import RedisBroker
from tests.support.wsclient import scaled


async def started(url: str, kind: type[RedisBroker] = RedisBroker, **options: Any) -> RedisBroker:
    """A broker of ``kind`` on ``url``, once it says it is ready (options: RedisOptions)."""
    up = asyncio.Event()

    def on_state(ready: bool) -> None:
        if ready:
            up.set()

    broker = kind(url, lambda room, payload: None, on_state, **options)
    await broker.start()
    await asyncio.wait_for(up.wait(), scaled(10))
    return broker
