"""A load-generator process: many WebSocket clients on one event loop, driven by the coordinator.

Commands arrive on a multiprocessing pipe as dicts; every command gets exactly one reply, and
long commands also send ``progress`` messages. Clients are picows connections on uvloop when
picows is installed (fast: a C frame parser, a callback per frame), else ``websockets`` clients
(one reader task per connection; slower, still correct).

Message texts carry what the receivers need, so no clock has to be shared with the server:
``m:<step>:<sender>:<seq>:<time.time_ns()>`` for measured messages, ``p:<round>:<sender>`` for
readiness probes. The connect scenario waits for the ``user_joined`` of each new client instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import threading
import time
from array import array
from collections.abc import Callable
from multiprocessing.connection import Connection as Pipe
from typing import TYPE_CHECKING, Any

import orjson

from roomcast_bench import bigroom

if TYPE_CHECKING:
    from roomcast_bench.storm import StormWorker

picows: Any
try:
    import picows
except ImportError:  # pragma: no cover - depends on the environment
    picows = None

TEXT_MARK = b'"text":"'
TEXT_SKIP = len(TEXT_MARK)
JOINED_MARK = b'"type":"user_joined"'
USER_MARK = b'"username":"'
LATENCY_CAP_US = 2**32 - 1


def client_kind(preferred: str = "auto") -> str:
    if preferred == "websockets" or (preferred == "auto" and picows is None):
        return "websockets"
    if picows is None:
        raise RuntimeError("picows is not installed (pip install -r bench/requirements.txt)")
    return "picows"


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def source_address(cid: int, per_address: int = 200) -> str:
    """A loopback source address per ``per_address`` clients (127.0.x.y, never 127.0.0.1).

    Real clients come from many addresses; nginx limits connections per address (256), and
    one address has only ~28k ephemeral ports per destination.
    """
    block = cid // per_address
    return f"127.0.{1 + (block // 250) % 250}.{1 + block % 250}"


class Client:
    """One WebSocket connection of the benchmark, whatever library carries it."""

    __slots__ = (
        "cid",
        "closed",
        "connected",
        "echo",
        "joined",
        "publisher",
        "ready",
        "room",
        "sender",
        "seq",
        "source",
        "url",
        "worker",
    )

    def __init__(self, worker: Worker, spec: dict[str, Any]) -> None:
        self.worker = worker
        self.cid: int = spec["cid"]
        self.url: str = spec["url"]
        self.room: str = spec["room"]
        self.publisher: bool = spec.get("publisher", False)
        self.source = source_address(self.cid)
        self.sender: Callable[[bytes], None] | None = None
        self.connected = False
        self.closed = False
        self.joined = False
        self.ready = False
        self.seq = 0
        self.echo: asyncio.Future[float] | None = None

    def send(self, data: bytes) -> None:
        if self.sender is not None and not self.closed:
            self.sender(data)

    @property
    def username(self) -> str:
        return f"u{self.cid}"

    def join(self) -> None:
        self.send(orjson.dumps({"type": "join", "room": self.room, "username": self.username}))

    def message(self, text: str) -> None:
        self.send(b'{"type":"message","text":"' + text.encode() + b'"}')


if picows is not None:

    class _Listener(picows.WSListener):  # type: ignore[misc,unused-ignore]
        __slots__ = ("client",)

        def __init__(self, client: Client) -> None:
            self.client = client

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            kind = frame.msg_type
            if kind is picows.WSMsgType.TEXT:
                self.client.worker.on_frame(self.client, frame.get_payload_as_bytes())
            elif kind is picows.WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

        def on_ws_disconnected(self, transport: Any) -> None:
            self.client.closed = True
            self.client.worker.on_disconnect(self.client)


class Worker:
    def __init__(self, index: int, pipe: Pipe, kind: str) -> None:
        self.index = index
        self.pipe = pipe
        self.kind = kind
        self.clients: list[Client] = []
        self.publishers: list[Client] = []
        self.members: list[Client] = []
        self.transports: list[Any] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        # Measurement state
        self.rx: dict[bytes, array[int]] = {}
        self.finished: set[bytes] = set()
        self.late = 0
        self.last_rx = 0.0
        self.probe_round = 0
        self.ready_count = 0
        self.ready_event = asyncio.Event()
        self.disconnects = 0
        self.errors: list[str] = []
        self.frames = 0
        self.server_errors = 0
        # Connect scenario: username -> new client whose user_joined an anchor has yet to see.
        self.waiting: dict[bytes, Client] = {}
        # A scenario's own frame handling (bigroom): True when it took the frame.
        self.tap: Callable[[Client, bytes], bool] | None = None
        self.storm: StormWorker | None = None  # the storm scenario's clients, when it runs

    # Frames in: the hot path of the load generator.

    def on_frame(self, client: Client, payload: bytes) -> None:
        self.frames += 1
        tap = self.tap
        if tap is not None and tap(client, payload):
            return
        start = payload.find(TEXT_MARK)
        if start < 0:
            if self.waiting and JOINED_MARK in payload:
                at = payload.find(USER_MARK)
                if at >= 0:
                    at += len(USER_MARK)
                    waiter = self.waiting.pop(payload[at : payload.find(b'"', at)], None)
                    if waiter is not None and waiter.echo is not None and not waiter.echo.done():
                        waiter.echo.set_result(time.monotonic())
            elif payload.startswith(b'{"type":"error"'):
                self.server_errors += 1
                if len(self.errors) < 5:
                    self.errors.append(payload[:200].decode(errors="replace"))
            return
        start += TEXT_SKIP
        kind = payload[start]
        if kind == 109:  # "m": a measured message
            now = time.time_ns()
            end = payload.find(b'"', start)
            _, step, _, _, sent = payload[start:end].split(b":")
            # Keyed by the step in the text, not by the step this worker was told about: another
            # worker may start sending a few milliseconds before this one gets the command.
            samples = self.rx.get(step)
            if samples is None:
                if step in self.finished:
                    self.late += 1
                    return
                samples = self.rx[step] = array("I")
            micros = (now - int(sent)) // 1000
            samples.append(min(max(micros, 0), LATENCY_CAP_US))
            self.last_rx = time.monotonic()
        elif kind == 112:  # "p": a readiness probe
            self.last_rx = time.monotonic()
            if not client.ready:
                client.ready = True
                self.ready_count += 1
                if self.ready_count >= len(self.members):
                    self.ready_event.set()

    def on_disconnect(self, client: Client) -> None:
        if client.connected:
            self.disconnects += 1
        if client.echo is not None and not client.echo.done():
            client.echo.set_exception(ConnectionError("closed before the room heard its join"))

    # Connecting

    async def open(self, client: Client, timeout: float) -> None:
        if self.kind == "picows":
            transport, _ = await picows.ws_connect(
                lambda: _Listener(client),
                client.url,
                websocket_handshake_timeout=timeout,
                enable_auto_pong=True,
                local_addr=(client.source, 0),
            )
            self.transports.append(transport)
            text = picows.WSMsgType.TEXT
            client.sender = lambda data: transport.send(text, data)
        else:
            import websockets.asyncio.client as wsclient

            conn = await wsclient.connect(
                client.url,
                open_timeout=timeout,
                compression=None,
                ping_interval=None,
                max_queue=None,
                local_addr=(client.source, 0),
            )
            self.transports.append(conn)
            loop = asyncio.get_running_loop()

            def sender(data: bytes) -> None:
                task = loop.create_task(conn.send(data.decode()))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

            client.sender = sender
            reader = loop.create_task(self._read_websockets(client, conn))
            self.tasks.add(reader)
            reader.add_done_callback(self.tasks.discard)
        client.connected = True

    async def _read_websockets(self, client: Client, conn: Any) -> None:
        try:
            async for message in conn:
                data = message.encode() if isinstance(message, str) else message
                self.on_frame(client, data)
        except Exception:
            pass
        finally:
            client.closed = True
            self.on_disconnect(client)

    async def connect(
        self, specs: list[dict[str, Any]], concurrency: int, timeout: float
    ) -> dict[str, Any]:
        """Open and join every client in ``specs``; at most ``concurrency`` handshakes at once."""
        new = [Client(self, spec) for spec in specs]
        self.clients.extend(new)
        self.members.extend(new)
        self.publishers.extend(c for c in new if c.publisher)
        self.ready_event.clear()
        failed = 0
        gate = asyncio.Semaphore(concurrency)
        started = time.monotonic()

        async def one(client: Client) -> None:
            nonlocal failed
            async with gate:
                try:
                    await self.open(client, timeout)
                except Exception as exc:
                    failed += 1
                    if len(self.errors) < 5:
                        self.errors.append(f"connect {client.url}: {type(exc).__name__}: {exc}")
                    return
                client.join()
                client.joined = True

        await self._with_progress(
            asyncio.gather(*(one(c) for c in new)),
            lambda: {"connected": sum(c.connected for c in new), "failed": failed},
        )
        return {
            "connected": sum(c.connected for c in new),
            "failed": failed,
            "seconds": time.monotonic() - started,
            "errors": self.errors[-5:],
        }

    async def probe(self, round_no: int, quiet: float, limit: float) -> dict[str, Any]:
        """Each publisher sends one probe; wait until every member here saw one (or quiet)."""
        self.probe_round = round_no
        for client in self.publishers:
            client.message(f"p:{round_no}:{client.cid}")
        deadline = time.monotonic() + limit
        self.last_rx = time.monotonic()
        while self.ready_count < len(self.members):
            now = time.monotonic()
            if now > deadline or now - self.last_rx > quiet:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ready_event.wait(), min(quiet, 0.05))
        return {"ready": self.ready_count, "members": len(self.members)}

    # Measured steps

    async def run_step(
        self, step: int, rate: float, duration: float, quiet: float, grace: float
    ) -> dict[str, Any]:
        """Send ``rate`` messages/s (over this worker's publishers) for ``duration`` seconds."""
        key = str(step).encode()
        self.late = 0
        sent_rooms: dict[str, int] = {}
        pubs = [c for c in self.publishers if not c.closed]
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        index = 0
        next_progress = start + 0.5
        # Wake about once per message, between 1 and 10 ms: pacing costs little CPU at low rates.
        tick = min(0.01, max(0.001, 1.0 / rate)) if rate > 0 else 0.05
        while True:
            now = loop.time()
            elapsed = now - start
            if elapsed >= duration:
                break
            due = int(elapsed * rate) + 1 - sent if pubs and rate > 0 else 0
            for _ in range(max(0, due)):
                client = pubs[index % len(pubs)]
                index += 1
                client.seq += 1
                client.message(f"m:{step}:{client.cid}:{client.seq}:{time.time_ns()}")
                sent_rooms[client.room] = sent_rooms.get(client.room, 0) + 1
                sent += 1
            if now >= next_progress:
                next_progress = now + 0.5
                received = len(self.rx.get(key, ()))
                self.pipe.send({"progress": True, "sent": sent, "received": received})
            await asyncio.sleep(tick)
        send_seconds = loop.time() - start
        send_end = time.monotonic()
        self.last_rx = max(self.last_rx, send_end)
        while True:
            now = time.monotonic()
            if now - send_end > grace or (now - self.last_rx > quiet and now - send_end > quiet):
                break
            await asyncio.sleep(0.02)
        latencies = self.rx.pop(key, array("I"))
        self.finished.add(key)
        received, late = len(latencies), self.late
        return {
            "sent_rooms": sent_rooms,
            "sent": sent,
            "received": received,
            "late": late,
            "latencies_us": latencies.tobytes(),
            "send_seconds": send_seconds,
            "disconnects": self.disconnects,
            "server_errors": self.server_errors,
            "errors": self.errors[-5:],
        }

    # Connect scenario: handshake + join + own first message back, per new client.

    async def setup_storm(
        self, specs: list[dict[str, Any]], concurrency: int, timeout: float
    ) -> dict[str, Any]:
        new = [Client(self, spec) for spec in specs]
        self.clients.extend(new)
        loop = asyncio.get_running_loop()
        durations = array("I")
        failed = 0
        gate = asyncio.Semaphore(concurrency)
        started = time.monotonic()

        async def one(client: Client) -> None:
            nonlocal failed
            async with gate:
                t0 = time.monotonic()
                client.echo = loop.create_future()
                self.waiting[client.username.encode()] = client
                try:
                    await self.open(client, timeout)
                    client.join()
                    done = await asyncio.wait_for(client.echo, timeout)
                except Exception as exc:
                    failed += 1
                    self.waiting.pop(client.username.encode(), None)
                    if len(self.errors) < 5:
                        self.errors.append(f"setup {client.url}: {type(exc).__name__}: {exc}")
                    return
                durations.append(min(LATENCY_CAP_US, int((done - t0) * 1e6)))

        await self._with_progress(
            asyncio.gather(*(one(c) for c in new)),
            lambda: {"connected": len(durations), "failed": failed},
        )
        return {
            "completed": len(durations),
            "failed": failed,
            "seconds": time.monotonic() - started,
            "durations_us": durations.tobytes(),
            "errors": self.errors[-5:],
        }

    # Plumbing

    async def _with_progress(self, work: Any, figures: Callable[[], dict[str, Any]]) -> None:
        task = asyncio.ensure_future(work)
        while not task.done():
            await asyncio.wait({task}, timeout=0.5)
            if not task.done():
                self.pipe.send({"progress": True, **figures()})
        task.result()

    async def close_all(self) -> dict[str, Any]:
        for transport in self.transports:
            with contextlib.suppress(Exception):
                if self.kind == "picows":
                    transport.disconnect(graceful=False)
                else:
                    transport.transport.abort()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        closed = len(self.transports)
        self.transports.clear()
        self.clients.clear()
        self.members.clear()
        self.publishers.clear()
        self.ready_count = 0
        self.disconnects = 0
        self.errors.clear()
        self.rx.clear()
        self.tap = None
        return {"closed": closed}

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        commands: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        def read_commands() -> None:
            # A thread, not loop.add_reader: that would make the pipe non-blocking, and a large
            # reply (latency samples) could then fail to send with EAGAIN.
            while True:
                try:
                    command = self.pipe.recv()
                except (EOFError, OSError):
                    loop.call_soon_threadsafe(commands.put_nowait, None)
                    return
                loop.call_soon_threadsafe(commands.put_nowait, command)
                if command.get("op") == "exit":
                    return

        threading.Thread(target=read_commands, name="commands", daemon=True).start()
        self.pipe.send({"hello": True, "pid": os.getpid(), "kind": self.kind})
        while True:
            command = await commands.get()
            if command is None or command["op"] == "exit":
                await self.close_all()
                return
            try:
                reply = await self.dispatch(command)
            except Exception as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            self.pipe.send({"done": command["op"], **reply})

    async def dispatch(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command["op"]
        if op == "connect":
            return await self.connect(
                command["clients"], command["concurrency"], command["timeout"]
            )
        if op == "probe":
            return await self.probe(command["round"], command["quiet"], command["limit"])
        if op == "step":
            return await self.run_step(
                command["step"], command["rate"], command["duration"], command["quiet"],
                command["grace"],
            )  # fmt: skip
        if op == "setup_storm":
            return await self.setup_storm(
                command["clients"], command["concurrency"], command["timeout"]
            )
        if op.startswith("storm_"):
            if self.storm is None:
                from roomcast_bench.storm import StormWorker

                self.storm = StormWorker(self)
            return await self.storm.dispatch(command)
        if op == "close_all":
            return await self.close_all()
        if op.startswith("bigroom_"):
            return await bigroom.worker_op(self, command)
        if op == "status":
            return {
                "clients": len(self.clients),
                "open": sum(not c.closed for c in self.clients),
                "publishers": sum(not c.closed for c in self.publishers),
                "frames": self.frames,
            }
        raise ValueError(f"unknown op {op!r}")


def worker_main(index: int, pipe: Pipe, kind: str) -> None:
    """Entry point of a load-generator process (multiprocessing target)."""
    raise_fd_limit()
    worker = Worker(index, pipe, kind)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(worker.serve())
    else:
        uvloop.run(worker.serve())
