"""``roomcast chat``: a terminal chat on top of ``roomcast.client``.

Interactive on a terminal (prompt_toolkit: incoming lines are printed above the input line, who
is typing shows in the bottom bar); line by line when stdin is a pipe (every line read is sent,
every event printed); ``--send TEXT`` joins, sends, waits for the message to come back with its
offset and exits 0, or exits 1 with the reason on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime

from roomcast.client import (
    Backoff,
    ChatMessage,
    ClientClosedError,
    Closed,
    Connected,
    Disconnected,
    Error,
    Event,
    Gap,
    History,
    Joined,
    JoinError,
    Presence,
    Reconnecting,
    Resumed,
    RoomcastClient,
    SendError,
    SendFailed,
    Typing,
    UserJoined,
    UserLeft,
)

HELP_LINE = "chat in a room from the terminal"
DESCRIPTION = (
    "Chat in a room: interactive on a terminal (incoming lines above the input line; /who, "
    "/history N, /quit), line by line when stdin is a pipe, or one message with --send "
    "(exit 0 once it is delivered, 1 with the reason on stderr)."
)
DEFAULT_URL = "ws://127.0.0.1:8080/chat"
TYPING_SHOWN_FOR = 3.0  # seconds a "bob is typing" notice stays up
HELP = "commands: /who (who is here), /history N (last N messages), /quit; anything else is sent"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=DEFAULT_URL, help=f"WebSocket URL (default {DEFAULT_URL})")
    parser.add_argument("--room", default="general", help="room to join (default general)")
    parser.add_argument(
        "--name",
        default=os.environ.get("USER") or "guest",
        help="your username (default $USER); with tokens, the token's name wins",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("ROOMCAST_TOKEN"),
        help="connection token (default: $ROOMCAST_TOKEN); see `roomcast token`",
    )
    parser.add_argument("--send", metavar="TEXT", help="send TEXT, wait for its delivery, exit")
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds --send waits for connection and delivery (default 10)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        client = RoomcastClient(
            args.url,
            args.name,
            token=args.token,
            rooms=[args.room],
            # One-shot: a couple of quick retries, then a clear failure instead of waiting.
            backoff=Backoff(0.2, 2.0),
            max_attempts=2 if args.send is not None else None,
        )
    except ValueError as exc:
        print(f"roomcast chat: {exc}", file=sys.stderr)
        return 2
    try:
        if args.send is not None:
            return asyncio.run(send_once(client, args.room, args.send, args.timeout))
        return asyncio.run(chat(client, args.room))
    except KeyboardInterrupt:
        return 130


async def send_once(client: RoomcastClient, room: str, text: str, timeout: float) -> int:
    async with client:
        try:
            async with asyncio.timeout(timeout):
                await client.join(room, timeout=timeout)
                outgoing = await client.send(room, text)
                delivered = await outgoing.wait()
        except ClientClosedError as exc:
            return _fail(f"cannot chat on {client.url}: {exc.closed.reason}")
        except JoinError as exc:
            return _fail(str(exc))
        except SendError as exc:
            return _fail(str(exc))
        except TimeoutError:
            reason = "" if client.connected else f" (not connected to {client.url})"
            return _fail(f"no delivery within {timeout:g} s{reason}")
    print(f"delivered to {room} at offset {delivered.offset} (epoch {delivered.epoch})")
    return 0


def _fail(message: str) -> int:
    print(f"roomcast chat: {message}", file=sys.stderr)
    return 1


class TypingBoard:
    """Who is typing, for the bottom bar; a notice fades after a few seconds."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def saw(self, username: str) -> None:
        self._until[username] = time.monotonic() + TYPING_SHOWN_FOR

    def stopped(self, username: str) -> None:
        self._until.pop(username, None)

    def text(self) -> str:
        now = time.monotonic()
        names = sorted(name for name, until in self._until.items() if until > now)
        if not names:
            return ""
        return f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} typing…"


def render(event: Event) -> str | None:
    """One line for the terminal, or None for events not worth a line."""
    if isinstance(event, ChatMessage):
        return _message_line(event)
    if isinstance(event, UserJoined):
        return f"* {event.username} joined"
    if isinstance(event, UserLeft):
        return f"* {event.username} left"
    if isinstance(event, Joined) and event.recovered is None and not event.already:
        return f"* you joined {event.room} as {event.username}"
    if isinstance(event, Connected):
        return f"* connected to {event.node or 'the server'}"
    if isinstance(event, Disconnected):
        return f"* disconnected ({event.code}: {event.reason})"
    if isinstance(event, Reconnecting):
        return f"* reconnecting in {event.delay:.1f} s (attempt {event.attempt}: {event.cause})"
    if isinstance(event, Resumed):
        return "* back, nothing missed"
    if isinstance(event, Gap):
        return f"! messages may be missing ({event.reason}): /history 20 shows the latest"
    if isinstance(event, Error):
        return f"! {event.code}: {event.reason}"
    if isinstance(event, SendFailed):
        return f"! not delivered ({event.reason}): {event.text}"
    if isinstance(event, Closed):
        return f"* closed: {event.reason}"
    if isinstance(event, Presence):
        members = ", ".join(
            m.username + (f" ({m.connections})" if m.connections > 1 else "") for m in event.members
        )
        return f"* in {event.room}: {members or 'nobody'}"
    if isinstance(event, History):
        lines = [_message_line(m) for m in event.messages] or ["(no history kept)"]
        return "\n".join([f"* last {len(event.messages)} of {event.room}:", *lines])
    return None


def _message_line(message: ChatMessage) -> str:
    clock = datetime.fromtimestamp(message.timestamp / 1000).strftime("%H:%M:%S")
    return f"[{clock}] {message.username}: {message.text}"


async def handle_line(client: RoomcastClient, room: str, line: str) -> bool:
    """Act on one input line; False once the user asked to quit."""
    text = line.strip()
    if not text:
        return True
    if text in ("/quit", "/exit"):
        return False
    try:
        if text == "/who":
            print(render(await client.presence(room)), flush=True)
        elif text.startswith("/history"):
            count = text.removeprefix("/history").strip() or "20"
            if not count.isdigit() or int(count) < 1:
                print("! usage: /history N (N ≥ 1)", flush=True)
            else:
                print(render(await client.history(room, int(count))), flush=True)
        elif text.startswith("/"):
            print(HELP, flush=True)
        else:
            await client.send(room, line.rstrip("\n"))
    except TimeoutError:
        print("! no answer (not connected?)", flush=True)
    return True


async def print_events(client: RoomcastClient, typing: TypingBoard | None = None) -> None:
    async for event in client:
        if isinstance(event, Typing):
            if typing is not None:
                typing.saw(event.username)
            continue
        if isinstance(event, ChatMessage | UserLeft) and typing is not None:
            typing.stopped(event.username)
        # Answers to /who and /history are printed by the command itself.
        line = None if isinstance(event, Presence | History) else render(event)
        if line is not None:
            print(line, flush=True)


async def chat(client: RoomcastClient, room: str) -> int:
    async with client:
        if sys.stdin.isatty() and sys.stdout.isatty() and _has_prompt_toolkit():
            await _chat_in_terminal(client, room)
        else:
            await _chat_by_lines(client, room)
        # `echo hi | roomcast chat`: the input ends at once, the message must still go out.
        await client.drain(timeout=5.0)
        stopped = client.closed  # set here only when the server or the retries ended it
    if stopped is not None:
        print(f"roomcast chat: {stopped.reason}", file=sys.stderr)
        return 1
    return 0


def _has_prompt_toolkit() -> bool:
    """The input line needs the optional ``chat`` extra; without it, read stdin line by line."""
    if importlib.util.find_spec("prompt_toolkit") is not None:
        return True
    print("roomcast chat: pip install 'roomcast[chat]' for an input line", file=sys.stderr)
    return False


async def _chat_in_terminal(client: RoomcastClient, room: str) -> None:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.patch_stdout import patch_stdout

    typing = TypingBoard()
    session: PromptSession[str] = PromptSession(
        f"{room}> ", bottom_toolbar=typing.text, refresh_interval=0.5
    )
    # The client throttles typing notices itself (one per second at most).
    session.default_buffer.on_text_changed += lambda buffer: _typed(client, room, buffer.text)
    print(HELP, flush=True)
    with patch_stdout():
        printer = asyncio.create_task(print_events(client, typing))
        try:
            await _until_quit(client, room, _prompt_lines(session.prompt_async), printer)
        finally:
            printer.cancel()


def _typed(client: RoomcastClient, room: str, text: str) -> None:
    if text:  # not the buffer being emptied after Enter
        client.typing(room)


async def _prompt_lines(prompt: Callable[[], Awaitable[str]]) -> AsyncIterator[str]:
    while True:
        try:
            yield await prompt()
        except (EOFError, KeyboardInterrupt):
            return


async def _chat_by_lines(client: RoomcastClient, room: str) -> None:
    printer = asyncio.create_task(print_events(client))
    try:
        await _until_quit(client, room, _stdin_lines(), printer)
    finally:
        printer.cancel()


async def _stdin_lines() -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except ValueError:  # a regular file: nothing to wait for, read it whole
        for line in sys.stdin.read().splitlines(keepends=True):
            yield line
        return
    while line := await reader.readline():
        yield line.decode(errors="replace")


async def _until_quit(
    client: RoomcastClient, room: str, lines: AsyncIterator[str], printer: asyncio.Task[None]
) -> None:
    """Read lines until /quit, end of input, or the client stopping for good."""

    async def consume() -> None:
        async for line in lines:
            if not await handle_line(client, room, line):
                return

    reading = asyncio.create_task(consume())
    await asyncio.wait({reading, printer}, return_when=asyncio.FIRST_COMPLETED)
    reading.cancel()
    await asyncio.gather(reading, return_exceptions=True)
