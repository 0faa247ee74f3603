"""The HTTP side of the public API as a backend and a dashboard would use it, through nginx:
a poster (``POST /api/rooms/{room}/messages``, each answer logged as a WebSocket sender's ack or
error) and an event-stream reader (``GET /api/rooms/{room}/events``, resumed with
``Last-Event-ID`` after every break, judged as a member). Their logs are ``MemberLog``s, so the
checker needs nothing new: a poster never joins, a stream's first event is its ``joined``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import h11

from tests.chaos.clients import UNLOGGED, Cursor, next_cursor, position_of
from tests.chaos.history import CONNECTED, LOST, Event, MemberLog
from tests.support.httpclient import EventStream, request

RETRY_CAP_SECONDS = 2.0
POST_TIMEOUT_SECONDS = 30.0  # beyond nginx's read timeout: its 504 is an answer too
# The node's heartbeat comes every 15 s; a stream silent for longer sits on a dead path.
STREAM_SILENCE_SECONDS = 20.0
# What each HTTP status of a post means, as the WebSocket error code it stands for.
POST_ERROR_CODES = {503: "unavailable", 504: "unconfirmed", 429: "rate_limited"}


class HttpPoster:
    """A backend posting a room's messages at a steady pace, one request after the other."""

    def __init__(self, name: str, room: str, http_url: str, rng: random.Random, interval: float):
        self.name, self.room, self.http_url, self.rng = name, room, http_url, rng
        self.interval = interval
        self.log = MemberLog(name, room, name)
        self.sending = True
        self._seq = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval * self.rng.uniform(0.5, 1.5))
            if self.sending:
                await self._post()

    async def _post(self) -> None:
        self._seq += 1
        text = f"{self.name}#{self._seq}"
        frame: Event = {"type": "message", "room": self.room, "text": text, "id": text}
        self.log.sent(time.monotonic(), frame)
        try:
            answer = await request(
                "POST",
                f"{self.http_url}/api/rooms/{self.room}/messages",
                json_body={"text": text, "username": self.name},
                timeout=POST_TIMEOUT_SECONDS,
            )
        except (OSError, TimeoutError, h11.ProtocolError):
            # No answer at all: its fate is unknown, like a WebSocket lost with it in flight.
            self.log.connection(time.monotonic(), LOST, None)
            self.log.connection(time.monotonic(), CONNECTED, None)
            return
        reply: Event = {
            "room": self.room,
            "id": text,
            "node": answer.headers.get("x-roomcast-node"),
        }
        if answer.status == 201:
            body = answer.json()
            reply |= {"type": "ack", "epoch": body.get("epoch"), "offset": body.get("offset")}
        else:
            code = POST_ERROR_CODES.get(answer.status, f"http_{answer.status}")
            reply |= {"type": "error", "code": code, "status": answer.status}
        self.log.received(time.monotonic(), reply)


class StreamReader:
    """A room's event stream, resumed from the last event it got (``Last-Event-ID``, epoch and
    offset) whenever it ends or breaks, with jittered backoff."""

    def __init__(self, name: str, room: str, http_url: str, rng: random.Random) -> None:
        self.name, self.room, self.http_url, self.rng = name, room, http_url, rng
        self.log = MemberLog(name, room, name)
        self.cursor: Cursor = None
        self.node: str | None = None
        self.joined = asyncio.Event()
        self.breaks = 0

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                await self._follow()
                failures = 0
            except (OSError, TimeoutError, EOFError, ValueError, h11.ProtocolError):
                failures += 1
            self.joined.clear()
            self.breaks += 1
            self.log.connection(time.monotonic(), LOST, self.node)
            ceiling = min(RETRY_CAP_SECONDS, 0.1 * 2**failures)
            await asyncio.sleep(self.rng.uniform(0, ceiling))

    async def _follow(self) -> None:
        headers = {}
        if self.cursor is not None:
            headers["Last-Event-ID"] = f"{self.cursor[0]}:{self.cursor[1]}"
        stream = await EventStream.open(f"{self.http_url}/api/rooms/{self.room}/events", headers)
        try:
            if stream.status != 200:
                raise ValueError(f"event stream answered {stream.status}")
            self.node = stream.node
            self.log.connection(time.monotonic(), CONNECTED, self.node)
            while True:
                event = (await stream.next(STREAM_SILENCE_SECONDS)).data
                if not isinstance(event, dict) or event.get("type") in UNLOGGED:
                    continue
                self.log.received(time.monotonic(), event)
                self.cursor = next_cursor(self.cursor, event)
                if event.get("type") == "joined" and position_of(event) is not None:
                    self.joined.set()
        finally:
            with contextlib.suppress(Exception):
                stream.close()
