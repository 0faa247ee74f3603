"""Chat clients as an application would write them, speaking only the public protocol through
nginx: reconnect with jittered backoff, rejoin with ``since`` = the last (epoch, offset) seen,
send messages with ids and keep every ack and refusal. Each logs all it sees (``MemberLog``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tests.chaos.history import CONNECTED, LOST, Event, MemberLog

# Live-only chatter the checker does not judge; kept out of the logs to keep them small.
UNLOGGED = frozenset({"user_joined", "user_left", "typing", "presence", "welcome", "left"})
RETRY_BASE_SECONDS = 0.1  # first retry after at most this (full jitter), doubling per failure
RETRY_CAP_SECONDS = 2.0
JOIN_RETRY_SECONDS = 0.3  # a join refused (Redis down) is tried again on the same connection


@dataclass
class Reconnect:
    """One lost connection and how long it took to be welcomed again through nginx."""

    lost_at: float
    lost_node: str
    back_at: float | None = None
    attempts: int = 0  # connection attempts until welcomed (1: the first retry worked)
    new_node: str | None = None

    @property
    def seconds(self) -> float | None:
        return None if self.back_at is None else self.back_at - self.lost_at


class ChaosClient:
    def __init__(
        self,
        name: str,
        room: str,
        url: str,
        rng: random.Random,
        send_interval: float | None = None,
    ) -> None:
        self.name = name
        self.room = room
        self.url = url
        self.rng = rng
        self.send_interval = send_interval
        self.log = MemberLog(name, room, name)
        self.cursor: tuple[str, int] | None = None
        self.node: str | None = None
        self.joined = asyncio.Event()
        self.reconnects: list[Reconnect] = []
        self.failed_attempts = 0
        self.sending = send_interval is not None
        self._seq = 0
        self._joins = 0
        self._ws: ClientConnection | None = None
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()

    # What the run loop drives

    async def run(self) -> None:
        lost: Reconnect | None = None
        attempts = 0
        while not self._stopping:
            attempts += 1
            try:
                async with connect(
                    self.url,
                    open_timeout=5,
                    ping_interval=1.0,  # a frozen node or a dead path is noticed within ~3 s
                    ping_timeout=2.0,
                    close_timeout=1.0,
                    max_size=2**22,
                    max_queue=None,
                ) as ws:
                    welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    self.node = str(welcome.get("node"))
                    self.log.connection(time.monotonic(), CONNECTED, self.node)
                    if lost is not None:
                        lost.back_at, lost.attempts, lost.new_node = (
                            time.monotonic(), attempts, self.node
                        )  # fmt: skip
                        self.reconnects.append(lost)
                        lost = None
                    attempts = 0
                    await self._session(ws)
            except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError, ValueError):
                self.failed_attempts += 1
            if self._stopping:
                break
            if lost is None and self.node is not None and attempts == 0:
                lost = Reconnect(time.monotonic(), self.node)
            ceiling = min(RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * 2 ** max(0, attempts))
            await asyncio.sleep(self.rng.uniform(0, ceiling))

    async def stop(self) -> None:
        self._stopping = True
        self.sending = False
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 2)

    async def burst(self, count: int, size: int) -> int:
        """``count`` messages of ``size`` characters at once (output-buffer overflow)."""
        sent = 0
        if self._ws is None or not self.joined.is_set():
            return 0
        for _ in range(count):
            with contextlib.suppress(ConnectionClosed):
                await self._send_message(self._ws, "x" * size)
                sent += 1
        return sent

    # One connection

    async def _session(self, ws: ClientConnection) -> None:
        self._ws = ws
        await self._join(ws)
        sender = asyncio.create_task(self._send_loop(ws)) if self.send_interval else None
        try:
            async for raw in ws:
                self._on_event(ws, json.loads(raw))
        finally:
            self._ws = None
            self.joined.clear()
            self.log.connection(time.monotonic(), LOST, self.node)
            if sender is not None:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender

    async def _join(self, ws: ClientConnection) -> None:
        self._joins += 1
        frame: Event = {
            "type": "join",
            "room": self.room,
            "username": self.name,
            "id": f"join-{self._joins}",
        }
        if self.cursor is not None:
            frame["since"] = {"epoch": self.cursor[0], "offset": self.cursor[1]}
        self.log.sent(time.monotonic(), frame)
        with contextlib.suppress(ConnectionClosed):
            await ws.send(json.dumps(frame))

    async def _send_message(self, ws: ClientConnection, padding: str = "") -> None:
        self._seq += 1
        text = f"{self.name}#{self._seq}"
        frame = {"type": "message", "room": self.room, "text": text + padding, "id": text}
        self.log.sent(time.monotonic(), frame)
        await ws.send(json.dumps(frame))

    async def _send_loop(self, ws: ClientConnection) -> None:
        assert self.send_interval is not None
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(self.send_interval * self.rng.uniform(0.5, 1.5))
                if self.sending and self.joined.is_set():
                    await self._send_message(ws)

    def _on_event(self, ws: ClientConnection, event: Any) -> None:
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind in UNLOGGED:
            return
        now = time.monotonic()
        self.log.received(now, event)
        if event.get("room") not in (None, self.room):
            return
        raw_epoch, raw_offset = event.get("epoch"), event.get("offset")
        position = (
            (raw_epoch, raw_offset)
            if isinstance(raw_epoch, str) and isinstance(raw_offset, int)
            else None
        )
        if kind == "joined" and position is not None:
            if self.cursor is None or event.get("recovered") is not True:
                self.cursor = position
            self.joined.set()
        elif kind == "message" and position is not None:
            if self.cursor is None or position[0] != self.cursor[0] or position[1] > self.cursor[1]:
                self.cursor = position
        elif position is not None and event.get("recovered") is False:
            self.cursor = position  # a loss notice naming where to resume
        elif kind == "loss":
            self._skip_lost(event)
        elif kind == "error" and str(event.get("id", "")).startswith("join-"):
            task = asyncio.create_task(self._rejoin_later(ws))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _skip_lost(self, event: Event) -> None:
        """After a ``loss`` event (README, the protocol), resume after what it declared lost,
        as an application that reloaded the history would."""
        new_epoch, epoch, last = event.get("new_epoch"), event.get("epoch"), event.get("to_offset")
        if isinstance(new_epoch, str):
            if self.cursor is None or self.cursor[0] != new_epoch:
                self.cursor = (new_epoch, 0)
        elif (
            self.cursor is not None
            and epoch == self.cursor[0]
            and isinstance(last, int)
            and last > self.cursor[1]
        ):
            self.cursor = (self.cursor[0], last)

    async def _rejoin_later(self, ws: ClientConnection) -> None:
        await asyncio.sleep(JOIN_RETRY_SECONDS * self.rng.uniform(0.5, 1.5))
        if self._ws is ws and not self.joined.is_set():
            await self._join(ws)


async def stop_clients(clients: Iterable[ChaosClient], tasks: Iterable[asyncio.Task[None]]) -> None:
    """Stop every client, then their run loops (each closes its connection first)."""
    for client in clients:
        await client.stop()
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
