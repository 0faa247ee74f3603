"""``roomcast`` / ``python -m roomcast``: run a node (configured by ROOMCAST_* variables)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from roomcast import logs
from roomcast.config import ConfigError, env_names, load_settings


def _run_node() -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"roomcast: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.node_id)
    from roomcast.app import serve

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it exists
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="roomcast",
        description="A roomcast node: WebSocket chat rooms shared through Redis.",
        epilog="Configuration comes from the environment: " + ", ".join(env_names()),
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run a node (the default)")
    args = parser.parse_args(argv)
    if args.command in (None, "serve"):
        return _run_node()
    parser.error(f"unknown command {args.command}")
    return 2
