"""Follows each active room's event stream (roomcast's SSE) to give stored messages their offsets.

Started for a room by its first allowed join; resumes after a cut with ``since`` (and ``epoch``),
so a node restart or a network blip loses nothing the room's Redis history still holds.
Streams are not members: they show in no presence list and announce nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import quote, urlencode

from examples.chat_backend.http import stream_lines
from examples.chat_backend.store import Store

log = logging.getLogger("chat_backend.archiver")
RETRY_SECONDS = 1.0


class Archiver:
    def __init__(self, store: Store, roomcast_http: str, api_key: str) -> None:
        self._store = store
        self._base = roomcast_http
        self._headers = {"authorization": f"Bearer {api_key}", "accept": "text/event-stream"}
        self._rooms: dict[str, asyncio.Task[None]] = {}

    def follow(self, room: str) -> None:
        if room not in self._rooms:
            self._rooms[room] = asyncio.create_task(self._follow(room), name=f"archive-{room}")

    async def stop(self) -> None:
        for task in self._rooms.values():
            task.cancel()
        await asyncio.gather(*self._rooms.values(), return_exceptions=True)
        self._rooms.clear()

    async def _follow(self, room: str) -> None:
        while True:
            try:
                await self._stream(room)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("stream of %s cut (%s); resuming", room, exc)
            await asyncio.sleep(RETRY_SECONDS)

    async def _stream(self, room: str) -> None:
        # From the last offset stored (or from the start of what Redis still holds): whatever
        # was published before this stream was up is recovered first, then it goes live.
        last = await self._store.last_offset(room)
        query = {"since": "0"} if last is None else {"epoch": last[0], "since": str(last[1])}
        url = f"{self._base}/api/rooms/{quote(room)}/events?{urlencode(query)}"
        async for line in stream_lines(url, self._headers):
            if not line.startswith("data:"):
                continue
            event = json.loads(line[5:])
            kind = event.get("type")
            if kind == "message":
                await self._store.record_published(event)
            elif kind == "message_deleted":
                await self._store.mark_deleted_offset(room, event["epoch"], event["offset"])
