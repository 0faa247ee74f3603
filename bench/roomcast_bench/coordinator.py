"""The coordinator side of the load generator: worker processes, commands, a live progress line."""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection as Pipe
from multiprocessing.connection import wait
from typing import Any, TextIO

from roomcast_bench.worker import worker_main


class BenchError(RuntimeError):
    pass


class Progress:
    """One live status line on stderr: redrawn in place on a terminal, throttled elsewhere."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.quiet = quiet
        self._last = 0.0
        self._shown = False
        self._started = time.monotonic()

    def update(self, text: str, force: bool = False) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        line = f"[{now - self._started:4.0f} s] {text}"
        if self.tty:
            if force or now - self._last >= 0.1:
                self.stream.write("\r\x1b[K" + line[:160])
                self.stream.flush()
                self._shown = True
                self._last = now
        elif force or now - self._last >= 2.0:
            self.stream.write(line + "\n")
            self.stream.flush()
            self._last = now

    def log(self, text: str) -> None:
        """A permanent line (a result), above the live line."""
        if self.tty and self._shown:
            self.stream.write("\r\x1b[K")
            self._shown = False
        self.stream.write(text + "\n")
        self.stream.flush()


class Generator:
    """``workers`` load-generator processes, each with many clients on its own event loop."""

    def __init__(self, workers: int, kind: str, progress: Progress) -> None:
        self.kind = kind
        self.progress = progress
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Pipe] = []
        self.processes: list[Any] = []
        self.pids: list[int] = []
        for index in range(workers):
            parent, child = context.Pipe()
            process = context.Process(
                target=worker_main, args=(index, child, kind), name=f"bench-worker-{index}",
                daemon=True,
            )  # fmt: skip
            process.start()
            child.close()
            self.pipes.append(parent)
            self.processes.append(process)
        try:
            for pipe, process in zip(self.pipes, self.processes, strict=True):
                if not pipe.poll(60):
                    raise BenchError(f"{process.name} did not start")
                hello = pipe.recv()
                self.pids.append(int(hello["pid"]))
        except BaseException:
            self.close()
            raise

    @property
    def size(self) -> int:
        return len(self.pipes)

    def call(
        self,
        op: str,
        args: Sequence[dict[str, Any]] | dict[str, Any] | None = None,
        *,
        timeout: float,
        show: Callable[[list[dict[str, Any]]], str] | None = None,
    ) -> list[dict[str, Any]]:
        """Send ``op`` to every worker (per-worker args or the same for all); await all replies."""
        per_worker = (
            list(args) if isinstance(args, Sequence) else [dict(args or {})] * len(self.pipes)
        )
        for pipe, extra in zip(self.pipes, per_worker, strict=True):
            pipe.send({"op": op, **extra})
        replies: dict[int, dict[str, Any]] = {}
        latest: list[dict[str, Any]] = [{} for _ in self.pipes]
        deadline = time.monotonic() + timeout
        while len(replies) < len(self.pipes):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"workers did not finish {op!r} within {timeout:.0f} s")
            ready = wait([p for i, p in enumerate(self.pipes) if i not in replies], 0.25)
            for ready_pipe in ready:
                index = self.pipes.index(ready_pipe)  # type: ignore[arg-type,unused-ignore]
                try:
                    message = self.pipes[index].recv()
                except EOFError:
                    raise BenchError(f"load-generator worker {index} died during {op!r}") from None
                if "progress" in message:
                    latest[index] = message
                else:
                    replies[index] = message
                    latest[index] = message
            for index, process in enumerate(self.processes):
                if index not in replies and not process.is_alive():
                    raise BenchError(f"load-generator worker {index} exited during {op!r}")
            if show is not None:
                self.progress.update(show(latest))
        ordered = [replies[i] for i in range(len(self.pipes))]
        errors = [r["error"] for r in ordered if "error" in r]
        if errors:
            raise BenchError(f"{op} failed in a worker: {errors[0]}")
        return ordered

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError, ValueError):
                pipe.send({"op": "exit"})
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.terminate()
                process.join(5)
        for pipe in self.pipes:
            pipe.close()
        self.pipes.clear()
        self.processes.clear()
