"""A throw-away PostgreSQL server: initdb in a temporary directory, one port on loopback.

For the example backend's tests and ``make run-example``, like redis-server in devcluster:
started here, stopped here by PID, its directory removed. PostgreSQL refuses to run as root, so
when we are root the server runs as the ``postgres`` user (Debian's package creates it), or as a
dedicated ``roomcast-pg`` user created for it when that is missing.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from roomcast_dev.devcluster import ClusterError, ManagedProcess, free_port

DATABASE = "roomcast_example"
_SERVICE_USERS = ("postgres", "roomcast-pg")


def postgres_bin_dir() -> Path:
    """The directory of Debian's initdb/postgres (not on PATH: /usr/lib/postgresql/N/bin)."""
    versions = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "postgres").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not versions:
        raise ClusterError("PostgreSQL not found: run `make example-deps` (Debian's postgresql)")
    return versions[-1]


def _service_user() -> pwd.struct_passwd | None:
    """Who runs the server: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in _SERVICE_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "roomcast-pg"],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam("roomcast-pg")


class PostgresServer:
    """initdb + postgres on 127.0.0.1:<port>, trust authentication on loopback only."""

    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="roomcast-pg-"))
        self.process: ManagedProcess | None = None
        self._user = _service_user()

    @property
    def dsn(self) -> str:
        return f"postgresql://{self._role}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def _role(self) -> str:
        return self._user.pw_name if self._user is not None else pwd.getpwuid(os.geteuid()).pw_name

    def _as_user(self) -> dict[str, Any]:
        """subprocess arguments that run a child as the service user (nothing when not root)."""
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def start(self) -> PostgresServer:
        binaries = postgres_bin_dir()
        data = self.workdir / "data"
        sockets = self.workdir / "sockets"
        sockets.mkdir()
        if self._user is not None:
            for path in (self.workdir, sockets):
                os.chown(path, self._user.pw_uid, self._user.pw_gid)
        init = subprocess.run(
            [
                str(binaries / "initdb"),
                "-D",
                str(data),
                "--auth=trust",  # loopback only (listen_addresses below), a throw-away server
                "--encoding=UTF8",
                "--no-sync",
                "-U",
                self._role,
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=self.workdir,
            **self._as_user(),
        )
        if init.returncode != 0:
            raise ClusterError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        self.process = ManagedProcess(
            "postgres",
            [
                str(binaries / "postgres"),
                "-D",
                str(data),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={sockets}",
                "-c",
                "fsync=off",  # test data: durability against power loss is not the point
                "-c",
                "logging_collector=off",
            ],
            popen_kwargs={"cwd": self.workdir, **self._as_user()},
        )
        self.process.wait_for_line(lambda line: "ready to accept connections" in line, 30)
        created = subprocess.run(
            [
                str(binaries.parent / "bin" / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self._role,
                DATABASE,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if created.returncode != 0:
            self.stop()
            raise ClusterError(f"createdb failed:\n{created.stderr}")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.alive():
            # SIGINT: PostgreSQL's "fast" shutdown (SIGTERM waits for clients to leave).
            self.process.signal(signal.SIGINT)
            self.process.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
