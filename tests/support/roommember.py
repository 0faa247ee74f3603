"""A Python client in a room beside the chat page (websockets' sync client): what the page's
tests use to say things in the room and read its history."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from roomcast_dev.devcluster import timeout_factor
from websockets.sync.client import ClientConnection, connect


class Member:
    """A Python client in the room (websockets' sync client): says things, reads history."""

    def __init__(self, ws: ClientConnection, room: str, name: str) -> None:
        self.ws = ws
        self.welcome = self.next_event("welcome")
        ws.send(json.dumps({"type": "join", "room": room, "username": name}))
        self.next_event("joined")

    def next_event(self, kind: str, timeout: float = 10) -> dict[str, Any]:
        while True:
            event: dict[str, Any] = json.loads(self.ws.recv(timeout=timeout * timeout_factor()))
            if event["type"] == kind:
                return event

    def say(self, text: str) -> None:
        self.ws.send(json.dumps({"type": "message", "text": text}))

    def send_answered(self, text: str, request_id: int) -> dict[str, Any]:
        """Send with an id; its ``ack`` or ``error``."""
        self.ws.send(json.dumps({"type": "message", "text": text, "id": request_id}))
        while True:
            event: dict[str, Any] = json.loads(self.ws.recv(timeout=10 * timeout_factor()))
            if event["type"] in ("ack", "error") and event.get("id") == request_id:
                return event

    def history(self) -> list[dict[str, Any]]:
        self.ws.send(json.dumps({"type": "history"}))
        messages: list[dict[str, Any]] = self.next_event("history")["messages"]
        return messages


@contextlib.contextmanager
def member(url: str, room: str, name: str) -> Iterator[Member]:
    # max_queue=None: echoes pile up unread while the test watches the page.
    with connect(url, open_timeout=10 * timeout_factor(), proxy=None, max_queue=None) as ws:
        yield Member(ws, room, name)
