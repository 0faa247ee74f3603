"""A tiny real HTTP server (asyncio + h11, keep-alive) playing the application's hooks.

Each test decides how it answers (``answer``): a verdict, a slow one, a 500, garbage; every call
is recorded, and a waiter can await the n-th call instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import h11
import orjson

Call = tuple[str, dict[str, Any], dict[str, str]]  # path, JSON body, headers
Answer = Callable[[str, dict[str, Any]], Awaitable[tuple[int, bytes]]]


def verdict(value: object) -> tuple[int, bytes]:
    return 200, orjson.dumps(value)


async def allow_everything(path: str, body: dict[str, Any]) -> tuple[int, bytes]:
    if body.get("hook") == "connect":
        return verdict({"result": "allow", "user": "anon", "name": "anon"})
    return verdict({"result": "allow"})


class HookServer:
    def __init__(self, port: int, answer: Answer = allow_everything) -> None:
        self.port = port
        self.answer = answer
        self.calls: list[Call] = []
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Event()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> HookServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> HookServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def hooks_called(self, hook: str) -> list[dict[str, Any]]:
        return [body for _, body, _ in self.calls if body.get("hook") == hook]

    async def wait_calls(self, count: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while len(self.calls) < count:
                self._changed.clear()
                await self._changed.wait()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        http = h11.Connection(h11.SERVER)
        try:
            while True:
                request, body = await self._request(http, reader)
                if request is None:
                    return
                headers = {k.decode().lower(): v.decode() for k, v in request.headers}
                parsed = orjson.loads(body) if body else {}
                self.calls.append((request.target.decode(), parsed, headers))
                self._changed.set()
                status, answer = await self.answer(request.target.decode(), parsed)
                writer.write(
                    http.send(
                        h11.Response(
                            status_code=status,
                            headers=[
                                ("content-type", "application/json"),
                                ("content-length", str(len(answer))),
                            ],
                        )
                    )
                    or b""
                )
                writer.write(http.send(h11.Data(data=answer)) or b"")
                writer.write(http.send(h11.EndOfMessage()) or b"")
                await writer.drain()
                if http.our_state is not h11.DONE or http.their_state is not h11.DONE:
                    return
                http.start_next_cycle()
        except (OSError, h11.ProtocolError, asyncio.CancelledError):
            return
        finally:
            self._handlers.discard(task)
            writer.close()

    @staticmethod
    async def _request(
        http: h11.Connection, reader: asyncio.StreamReader
    ) -> tuple[h11.Request | None, bytes]:
        request: h11.Request | None = None
        chunks: list[bytes] = []
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                http.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return request, b"".join(chunks)
            elif isinstance(event, h11.ConnectionClosed):
                return None, b""
