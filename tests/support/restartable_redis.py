"""A redis-server of a test's own, on files of its own, SIGKILLed and started again on them (an
AOF or a snapshot), and what its members were told of the restart."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from roomcast_dev.devcluster import ManagedProcess, find_binary, free_port

from tests.support.delivery import Traffic

READY = "Ready to accept connections"


class RestartableRedis:
    """``options`` are redis-server's (persistence); the restart may add more (a slow load)."""

    def __init__(self, workdir: Path, options: list[str]) -> None:
        self.port = free_port()
        self.argv = [find_binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1"]
        self.argv += [*options, "--dir", str(workdir)]
        self.process = self._start(self.argv, READY)

    @staticmethod
    def _start(argv: list[str], line: str) -> ManagedProcess:
        process = ManagedProcess("redis", argv)
        process.wait_for_line(lambda text: line in text, 20)
        return process

    def kill_and_restart(self, more: list[str] | None = None, until_line: str = READY) -> None:
        """SIGKILL, then start again on the same files, returning once it logs ``until_line``."""
        self.process.signal(9)
        self.process.popen.wait(10)
        self.process = self._start(self.argv + (more or []), until_line)


@contextmanager
def restartable_redis(options: list[str]) -> Iterator[RestartableRedis]:
    with tempfile.TemporaryDirectory(prefix="roomcast-redis-") as workdir:
        server = RestartableRedis(Path(workdir), options)
        try:
            yield server
        finally:
            server.process.stop()


def epoch_changes_told(traffic: Traffic) -> list[int]:
    """How many ``epoch_changed`` losses each member was told."""
    return [
        sum(loss.get("reason") == "epoch_changed" for loss in member.losses)
        for member in traffic.members
    ]
