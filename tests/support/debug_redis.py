"""A standalone redis-server that accepts ``DEBUG`` (off by default since Redis 7), for tests
that make Redis slow on purpose (``DEBUG SLEEP``), without persistence."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from roomcast_dev.devcluster import ManagedProcess, find_binary, free_port


@contextmanager
def debuggable_redis_server() -> Iterator[int]:
    """Its port, once it accepts connections; stopped (by its own PID) on exit."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="roomcast-debug-redis-") as workdir:
        argv = [find_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(Path(workdir))]
        process = ManagedProcess("redis", [*argv, "--enable-debug-command", "yes"])
        try:
            process.wait_for_line(lambda line: "Ready to accept connections" in line, 20)
            yield port
        finally:
            process.stop()
