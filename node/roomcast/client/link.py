"""One connection's state: the open WebSocket, its ordered frame queue and writer, and what
the client knows about each room it wants to be in."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from roomcast.client.cursor import RoomCursor
from roomcast.client.events import Joined, Welcome
from roomcast.client.outgoing import Outgoing


@dataclass(eq=False)
class RoomState:
    cursor: RoomCursor
    username: str = ""  # as the server named us (with tokens, the token's name)
    live_on: int | None = None  # serial of the connection whose join of this room completed
    join_sent_on: int | None = None
    join_sent_at: float = 0.0  # monotonic time of the last join sent
    resume_target: int | None = None  # offset the replay after a resume reaches
    last_joined: Joined | None = None
    waiters: list[asyncio.Future[Joined]] = field(default_factory=list)
    last_typing: float = float("-inf")
    # The client joins it by itself (given at start, or joined once): a join of it refused for
    # a while (rate_limited, hook_unavailable) is retried instead of given up.
    kept: bool = False
    rejoin_attempt: int = 0  # refusals in a row, the rejoin backoff's exponent
    rejoin_at: float | None = None  # monotonic time before which no join of it is sent
    rejoin_timer: asyncio.TimerHandle | None = None

    def cancel_rejoin(self) -> None:
        if self.rejoin_timer is not None:
            self.rejoin_timer.cancel()
            self.rejoin_timer = None


class Link:
    """One open WebSocket: its serial number, its writer task and the frames waiting for it.

    One writer per connection sends frames one at a time, in the order they were queued, so a
    message queued while offline goes out after its room's rejoin and before anything later.
    """

    def __init__(self, serial: int, ws: ClientConnection) -> None:
        self.serial = serial
        self.ws = ws
        self.welcome: Welcome | None = None
        self.frames: deque[tuple[str, Outgoing | None]] = deque()
        self.idle = asyncio.Event()
        self.idle.set()
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    def write(self, frame: dict[str, Any], outgoing: Outgoing | None = None) -> None:
        self.frames.append((orjson.dumps(frame).decode(), outgoing))
        self.idle.clear()
        self._wakeup.set()

    def start_writer(self, on_written: Callable[[Outgoing, int], None]) -> None:
        self._writer = asyncio.create_task(self._write_loop(on_written))

    def stop(self) -> list[Outgoing]:
        """Stop writing; the messages never written, in order."""
        if self._writer is not None:
            self._writer.cancel()
        unsent = [outgoing for _, outgoing in self.frames if outgoing is not None]
        self.frames.clear()
        self.idle.set()
        return unsent

    async def _write_loop(self, on_written: Callable[[Outgoing, int], None]) -> None:
        while True:
            while not self.frames:
                self.idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
            frame, outgoing = self.frames.popleft()
            if outgoing is not None:
                if outgoing.done:  # given up while waiting for this connection
                    continue
                # Counted as written from here on: if the send fails, the frame may still have
                # left, so the message is never written again (at most once).
                on_written(outgoing, self.serial)
            try:
                await self.ws.send(frame)
            except ConnectionClosed:
                return  # the reader sees the close too and ends the connection
