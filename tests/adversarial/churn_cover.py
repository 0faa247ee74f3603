"""A room's joins and leaves hidden by other clients' churn (red teams 10 and 12): a watcher that
counts what it is told, churn cycles of one address, and whether another user's join is named."""

from __future__ import annotations

import contextlib

from tests.adversarial.rawws import HandshakeRefused, RawWebSocket


async def joined(port: int, room: str, username: str, source: str | None = None) -> RawWebSocket:
    """A WebSocket to the node at ``port`` joined to ``room``."""
    ws = await RawWebSocket.connect("127.0.0.1", port, source=source)
    await ws.send({"type": "join", "room": room, "username": username})
    await ws.next_text(type="joined")
    return ws


async def churn_cycle(port: int, room: str, username: str, source: str | None = None) -> bool:
    """Open, join ``room``, close: whether the cycle went through (a refused handshake or join
    is part of the attack, not a failure)."""
    with contextlib.suppress(HandshakeRefused, ConnectionError, TimeoutError):
        ws = await RawWebSocket.connect("127.0.0.1", port, source=source)
        try:
            await ws.send({"type": "join", "room": room, "username": username})
            await ws.next_text(type="joined")
        finally:
            await ws.close()
        return True
    return False


async def join_is_named(bob: RawWebSocket, watcher: RawWebSocket, room: str) -> bool:
    """Bob (already connected) joins ``room``: whether the watcher is told his name within 3 s
    (scaled), not only a count."""
    await bob.send({"type": "join", "room": room, "username": "bob"})
    await bob.next_text(type="joined")
    try:
        await watcher.next_text(timeout=3, type="user_joined", username="bob")
    except TimeoutError:
        return False
    return True


def told(watcher: RawWebSocket) -> tuple[int, int]:
    """How many ``user_joined`` and ``presence_changed`` the watcher got."""
    texts = watcher.received.texts
    names = sum(t.get("type") == "user_joined" for t in texts)
    return names, sum(t.get("type") == "presence_changed" for t in texts)
