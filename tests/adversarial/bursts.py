"""Large-message bursts: what one connection may legally send (the default burst of 20 messages)
at the default frame limit (64 KiB), the payloads attacks 2, 3 and 4 are built from."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from tests.adversarial.devcluster_shim import scaled
from tests.adversarial.rawws import RawWebSocket, text

# 60 KB of text: a message just under the default 64 KiB frame limit once framed as JSON.
LARGE_TEXT_BYTES = 60_000
# The default ROOMCAST_MESSAGE_RATE_BURST: what one connection may send at once, legitimately.
DEFAULT_MESSAGE_BURST = 20


@dataclass
class BurstOutcome:
    acked: int
    refused: dict[str, int]
    last_offset: int | None


async def join(ws: RawWebSocket, room: str, username: str) -> dict[str, object]:
    await ws.send({"type": "join", "room": room, "username": username, "id": f"join-{room}"})
    return await ws.next_text(type="joined", room=room)


async def burst(
    ws: RawWebSocket, room: str, count: int = DEFAULT_MESSAGE_BURST, size: int = LARGE_TEXT_BYTES
) -> BurstOutcome:
    """``count`` messages of ``size`` bytes with ids, sent at once; waits for an answer to each.

    A message refused by its own id (``ack`` or ``error``) is answered by it; a frame refused
    before it was parsed (the per-address inbound bound: ``rate_limited`` with no id, since its
    id was never read) answers one of them too. Waiting for the id of such a frame would wait
    until the connection ends."""
    body = "x" * size
    wanted = {f"b{index}" for index in range(count)}
    start = len(ws.received.texts)
    for index in range(count):
        ws.send_bytes(text({"type": "message", "room": room, "text": body, "id": f"b{index}"}))
    await ws.drain(30)
    acked, refused, last = 0, dict[str, int](), None
    seen = start
    async with asyncio.timeout(scaled(30)):
        while acked + sum(refused.values()) < count:
            for event in ws.received.texts[seen:]:
                seen += 1
                key = event.get("id")
                if event["type"] == "ack" and key in wanted:
                    acked += 1
                    last = int(event["offset"])
                elif event["type"] == "error" and (key in wanted or key is None):
                    code = str(event.get("code"))
                    refused[code] = refused.get(code, 0) + 1
            if acked + sum(refused.values()) >= count:
                break
            if ws.received.ended.is_set():
                refused["closed"] = count - acked - sum(refused.values())
                break
            ws.received.arrived.clear()
            if len(ws.received.texts) == seen:
                await ws.received.arrived.wait()
    return BurstOutcome(acked, refused, last)
