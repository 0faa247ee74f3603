"""A small test client on top of websockets' asyncio client, awaiting events instead of sleeping."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque
from collections.abc import Callable
from typing import Any

from roomcast_dev.devcluster import timeout_factor
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

Event = dict[str, Any]

_join_ids = itertools.count(1)


def scaled(seconds: float) -> float:
    return seconds * timeout_factor()


class Client:
    def __init__(self, ws: ClientConnection, welcome: Event) -> None:
        self.ws = ws
        self.welcome = welcome
        self.node: str = welcome["node"]
        self.connection_id: str = welcome["connection"]
        self._buffer: deque[Event] = deque()

    @classmethod
    async def connect(cls, url: str, **kwargs: Any) -> Client:
        # max_queue=None: a test client that reads lazily must still see close frames.
        ws = await connect(url, open_timeout=scaled(10), max_size=2**22, max_queue=None, **kwargs)
        welcome = json.loads(await asyncio.wait_for(ws.recv(), scaled(10)))
        assert welcome["type"] == "welcome", welcome
        return cls(ws, welcome)

    async def send(self, **frame: Any) -> None:
        await self.ws.send(json.dumps(frame))

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def recv(self, timeout: float = 10) -> Event:
        if self._buffer:
            return self._buffer.popleft()
        raw = await asyncio.wait_for(self.ws.recv(), scaled(timeout))
        event: Event = json.loads(raw)
        return event

    async def recv_type(self, kind: str, timeout: float = 10, **match: Any) -> Event:
        """The next event of ``kind`` (matching ``match``); others are kept for later reads."""

        def wanted(event: Event) -> bool:
            return event["type"] == kind and all(event.get(k) == v for k, v in match.items())

        return await self.recv_where(wanted, timeout)

    async def recv_where(self, wanted: Callable[[Event], bool], timeout: float = 10) -> Event:
        """The next event ``wanted`` accepts; others are kept for later reads."""
        for index, event in enumerate(self._buffer):
            if wanted(event):
                del self._buffer[index]
                return event
        async with asyncio.timeout(scaled(timeout)):
            while True:
                event = json.loads(await self.ws.recv())
                if wanted(event):
                    return event  # type: ignore[no-any-return]
                self._buffer.append(event)

    async def join(self, room: str, username: str) -> Event:
        """Join and return the ``joined`` event; a refusal fails at once, with its reason (not
        as a timeout waiting for a ``joined`` that will never come)."""
        request = f"join-{room}-{next(_join_ids)}"
        await self.send(type="join", room=room, username=username, id=request)

        def answer(event: Event) -> bool:
            if event["type"] == "joined" and event.get("room") == room:
                return True
            return event["type"] == "error" and event.get("id") == request

        event = await self.recv_where(answer)
        assert event["type"] == "joined", f"join of {room!r} refused: {event}"
        return event

    async def expect_close(self, timeout: float = 10) -> tuple[int | None, str | None]:
        try:
            async with asyncio.timeout(scaled(timeout)):
                while True:
                    await self.ws.recv()
        except ConnectionClosed:
            pass
        await asyncio.wait_for(self.ws.wait_closed(), scaled(timeout))
        rcvd = self.ws.protocol.close_rcvd
        return (rcvd.code, rcvd.reason) if rcvd is not None else (None, None)

    async def events_until_message(self, text: str, timeout: float = 10) -> list[Event]:
        """Every event not read yet, up to and including the chat message holding ``text``:
        what a member was sent before a marker."""
        events: list[Event] = []

        def until_marker(event: Event) -> bool:
            events.append(event)
            return event["type"] == "message" and event.get("text") == text

        await self.recv_where(until_marker, timeout)
        return events

    async def close(self) -> None:
        await self.ws.close()


async def clients_on_distinct_nodes(url: str, count: int, attempts: int = 30) -> list[Client]:
    """Connect through the load balancer until ``count`` clients sit on ``count`` distinct nodes."""
    chosen: dict[str, Client] = {}
    extra: list[Client] = []
    for _ in range(attempts):
        client = await Client.connect(url)
        if client.node in chosen:
            extra.append(client)
        else:
            chosen[client.node] = client
        if len(chosen) == count:
            break
    for client in extra:
        await client.close()
    assert len(chosen) == count, f"only reached nodes {sorted(chosen)}"
    return list(chosen.values())
