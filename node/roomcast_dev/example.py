"""The example backend with everything it needs, as local processes: ``make run-example``.

PostgreSQL (a temporary data directory), redis-server, N nodes calling the example's hooks,
nginx, and the example app (``python -m examples.chat_backend``). The tests use the same stack.
Every process is started here and stopped here by PID; Ctrl-C stops them all.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from roomcast_dev.devcluster import (
    REPO_ROOT,
    ClusterError,
    LocalCluster,
    ManagedProcess,
    free_port,
)
from roomcast_dev.postgres import PostgresServer

DEMO_USERS = "alice:alice-pass,bob:bob-pass,moderator:moderator-pass"


@dataclass
class Secrets:
    """Shared by the nodes and the app: fresh for every run, never written to a file."""

    token: str = field(default_factory=lambda: secrets.token_hex(32), repr=False)
    api_key: str = field(default_factory=lambda: secrets.token_hex(16), repr=False)
    hook: str = field(default_factory=lambda: secrets.token_hex(32), repr=False)


class ExampleStack:
    def __init__(
        self,
        nodes: int = 3,
        *,
        nginx_port: int = 0,
        app_port: int = 0,
        node_env: Mapping[str, str] | None = None,
        users: str = DEMO_USERS,
    ) -> None:
        self.users = users  # name:password,... the backend creates at start
        self.secrets = Secrets()
        self.app_port = app_port or free_port()
        hooks = f"http://127.0.0.1:{self.app_port}/hooks"
        env = {
            "ROOMCAST_AUTH_SECRET": self.secrets.token,
            "ROOMCAST_API_KEYS": self.secrets.api_key,
            "ROOMCAST_HOOK_CONNECT_URL": f"{hooks}/connect",
            "ROOMCAST_HOOK_JOIN_URL": f"{hooks}/join",
            "ROOMCAST_HOOK_PUBLISH_URL": f"{hooks}/publish",
            "ROOMCAST_HOOK_SECRET": self.secrets.hook,
            **(node_env or {}),
        }
        self.postgres = PostgresServer()
        self.cluster = LocalCluster(nodes, node_env=env, nginx_port=nginx_port)
        self.app: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.app_port}"

    def start(self) -> ExampleStack:
        try:
            self.postgres.start()
            self.cluster.start()
            self.start_app()
        except BaseException:
            self.stop()
            raise
        return self

    def app_environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_BACKEND_")}
        path = [str(REPO_ROOT), str(REPO_ROOT / "node"), env.get("PYTHONPATH", "")]
        env.update(
            {
                "PYTHONPATH": os.pathsep.join(p for p in path if p),
                "PYTHONUNBUFFERED": "1",
                "CHAT_BACKEND_DATABASE_URL": self.postgres.dsn,
                "CHAT_BACKEND_TOKEN_SECRET": self.secrets.token,
                "CHAT_BACKEND_API_KEY": self.secrets.api_key,
                "CHAT_BACKEND_HOOK_SECRET": self.secrets.hook,
                "CHAT_BACKEND_ROOMCAST_HTTP": self.cluster.http_url,
                "CHAT_BACKEND_PUBLIC_WS_URL": self.cluster.url,
                "CHAT_BACKEND_PORT": str(self.app_port),
                "CHAT_BACKEND_USERS": self.users,
                "CHAT_BACKEND_MODERATORS": "moderator",
            }
        )
        return env

    def start_app(self) -> ManagedProcess:
        self.app = ManagedProcess(
            "chat_backend",
            [sys.executable, "-m", "examples.chat_backend"],
            self.app_environment(),
            popen_kwargs={"cwd": REPO_ROOT},
        )
        self.app.wait_for_line(lambda line: "Uvicorn running on" in line, 30)
        return self.app

    def stop(self) -> None:
        if self.app is not None:
            self.app.stop()
        self.cluster.stop()
        self.postgres.stop()

    def __enter__(self) -> ExampleStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m roomcast_dev.example",
        description="Run the example backend with PostgreSQL, Redis, N nodes and nginx.",
    )
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--port", type=int, default=int(os.environ.get("EXAMPLE_PORT", "8090")))
    parser.add_argument(
        "--lb-port", type=int, default=int(os.environ.get("ROOMCAST_LB_PORT", "8080"))
    )
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stack = ExampleStack(args.nodes, nginx_port=args.lb_port, app_port=args.port)
    try:
        stack.start()
    except ClusterError as exc:
        print(f"could not start the example: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"the example chat is running: open {stack.url}/")
        print("  log in as alice / alice-pass, bob / bob-pass, moderator / moderator-pass")
        print(f"  moderation: {stack.url}/moderate (as moderator)")
        print(f"  roomcast (nginx): {stack.cluster.http_url}  WebSocket {stack.cluster.url}")
        print(f"  PostgreSQL: {stack.postgres.dsn}")
        print(f"  redis: {stack.cluster.redis_url}")
        print("Press Ctrl-C to stop.", flush=True)
        processes = [(n.node_id, n.process) for n in stack.cluster.nodes]
        if stack.app is not None:
            processes.append(("chat_backend", stack.app))
        while not stop.wait(1.0):
            for name, process in processes:
                if not process.alive():
                    print(f"{name} exited:\n{process.tail()}", file=sys.stderr)
                    return 1
    finally:
        print("stopping…", flush=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
