"""``roomcast`` / ``python -m roomcast``: run a node (configured by ROOMCAST_* variables)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from roomcast.runtime import logs
from roomcast.runtime.config import ConfigError, env_names, load_settings


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
    token = sub.add_parser(
        "token",
        help="issue a development token (HS256) for a user",
        description="Prints an HS256 token signed with ROOMCAST_AUTH_SECRET (or its _FILE).",
    )
    token.add_argument("subject", help="the user id (the token's sub)")
    token.add_argument("--name", help="display name, the username in rooms (default: subject)")
    token.add_argument(
        "--room",
        action="append",
        dest="rooms",
        metavar="PATTERN",
        help="a room (or pattern like 'team-*') the user may join; repeat; default: any",
    )
    token.add_argument("--ttl", type=float, default=3600.0, help="seconds of validity")
    token.add_argument(
        "--grant",
        metavar="ROOM",
        help="issue a room token instead: it lets the user join exactly ROOM (a join's "
        "room_token), e.g. a direct room dm:<sub a>:<sub b>",
    )
    token.add_argument("--role", help="with --grant: the user's role in the room")
    from roomcast import chat_cli

    chat = sub.add_parser("chat", help=chat_cli.HELP_LINE, description=chat_cli.DESCRIPTION)
    chat_cli.add_arguments(chat)
    from roomcast.admin import capacity_cli

    capacity = sub.add_parser(
        "capacity", help=capacity_cli.HELP_LINE, description=capacity_cli.DESCRIPTION
    )
    capacity_cli.add_arguments(capacity)
    args = parser.parse_args(argv)
    if args.command in (None, "serve"):
        return _run_node()
    if args.command == "chat":
        return chat_cli.run(args)
    if args.command == "capacity":
        return capacity_cli.run(args)
    if args.grant is None and args.role is not None:
        parser.error("--role goes with --grant")
    return _issue_token(args.subject, args.name, args.rooms, args.ttl, args.grant, args.role)


def _issue_token(
    subject: str,
    name: str | None,
    rooms: list[str] | None,
    ttl: float,
    grant: str | None = None,
    role: str | None = None,
) -> int:
    from roomcast.core.auth import issue_token

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"roomcast: {exc}", file=sys.stderr)
        return 2
    if settings.auth_secret is None:
        print("roomcast token: set ROOMCAST_AUTH_SECRET (or _FILE) to sign with", file=sys.stderr)
        return 2
    print(
        issue_token(
            settings.auth_secret,
            subject,
            name=name,
            rooms=rooms,
            ttl=ttl,
            audience=settings.auth_audience,
            issuer=settings.auth_issuer,
            room=grant,
            role=role,
        )
    )
    return 0
