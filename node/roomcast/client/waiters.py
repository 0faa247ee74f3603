"""Requests the server answers without an id (presence, history, leave): answered in order,
per kind and room, so the oldest waiter of a kind and room takes the next answer."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from roomcast.client.errors import LinkLost


class Requests:
    def __init__(self) -> None:
        self._waiting: dict[tuple[str, str], deque[asyncio.Future[Any]]] = {}

    def expect(self, kind: str, room: str) -> asyncio.Future[Any]:
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault((kind, room), deque()).append(waiter)
        return waiter

    def answer(self, kind: str, room: str, event: object) -> None:
        waiters = self._waiting.get((kind, room))
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():  # skip those whose caller gave up
                waiter.set_result(event)
                return

    def lose_all(self) -> None:
        """The connection ended: every question asked on it must be asked again."""
        for waiters in self._waiting.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(LinkLost())
        self._waiting.clear()
