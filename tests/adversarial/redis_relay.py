"""A TCP relay between one node and Redis, for faults that neither Redis nor a signal can make
on one link alone: an answer held back (a busy loop, a slow link), a link gone silent both ways
without a reset (a NAT or firewall that forgot the flow)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass(eq=False)
class RelayedLink:
    sent: bytearray = field(default_factory=bytearray)  # what the node sent (its first 4 KiB)
    held: bool = False  # Redis's answers wait for the relay's release
    silent: bool = False  # nothing passes either way any more, and nothing is closed

    @property
    def subscriber(self) -> bool:
        return b"SUBSCRIBE" in self.sent.upper()


class RedisRelay:
    def __init__(self, redis_port: int) -> None:
        self.redis_port = redis_port
        self.hold_ban_reads = False
        # Redis's answers on a link wait for ``release`` from the moment the node sends these
        # bytes on it (what it sent reaches Redis and runs): a reply slowed on one request.
        self.hold_after: bytes | None = None
        self.asked = asyncio.Event()  # a ban key was read while hold_ban_reads, or hold_after
        self.release = asyncio.Event()
        self.links: list[RelayedLink] = []
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def silence(self, subscriber: bool) -> int:
        """Silence the node's open subscriber links (or its other links): how many."""
        chosen = [link for link in self.links if link.subscriber == subscriber and not link.silent]
        for link in chosen:
            link.silent = True
        return len(chosen)

    def hold_answers(self, subscriber: bool) -> int:
        """Half-open: Redis's bytes to the node's open subscriber links (or its other links)
        wait for ``release`` while the node's still reach Redis; nothing is closed. How many."""
        chosen = [link for link in self.links if link.subscriber == subscriber and not link.held]
        for link in chosen:
            link.held = True
        return len(chosen)

    async def _accept(self, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.redis_port)
        link = RelayedLink()
        self.links.append(link)
        for task in (
            asyncio.ensure_future(self._pump(down_r, up_w, link, upward=True)),
            asyncio.ensure_future(self._pump(up_r, down_w, link, upward=False)),
        ):
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        link: RelayedLink,
        *,
        upward: bool,
    ) -> None:
        try:
            while data := await reader.read(65536):
                if link.silent:
                    continue
                if upward:
                    if len(link.sent) < 4096:
                        link.sent += data[:4096]
                    if self.hold_ban_reads and b":ban:" in data and b"GET" in data:
                        link.held = True
                        self.asked.set()
                    if self.hold_after is not None and self.hold_after in data:
                        link.held = True
                        self.asked.set()
                elif link.held:
                    await self.release.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
