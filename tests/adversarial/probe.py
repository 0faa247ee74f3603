"""The bystander: a well-behaved member whose round trips are timed while someone attacks.

Runs as its own process (``python -m tests.adversarial.probe URL ROOM``), so the attacker's CPU use
in the test process cannot distort its clock. Every ``PERIOD`` it sends one frame that needs the
node's event loop and Redis to answer: ``presence`` with an id (answered by ``presence``), and every
fifth time a chat ``message`` with an id (answered by its own echo). It prints ``ready`` once
joined, and when its stdin closes, one JSON line with every round trip in milliseconds and every
failure (an error frame, a close, an answer that never came).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

# 25 frames/s: half of the default per-connection frame rate (50/s), and a message every 200 ms
# (5/s, half of the default message rate): the probe never trips a limit itself.
PERIOD = 0.04
MESSAGE_EVERY = 5
# A documentation address (RFC 5737): nobody else in the tests has it.
BYSTANDER_ADDRESS = "192.0.2.77"
# An answer slower than this is recorded as this (the attack made the node unresponsive).
GIVE_UP_AFTER = 10.0


async def _stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


async def run(url: str, room: str) -> dict[str, Any]:
    latencies: list[float] = []
    failures: list[str] = []
    # Another user than the attacker: on loopback every test client has the address 127.0.0.1,
    # which in open mode is also the key of the per-client limits. The probe connects to the
    # node directly and names its own address the way nginx names each real client's (the node
    # believes the proxy's hop from loopback), so the attacker's client buckets are not its own.
    headers = {"X-Forwarded-For": BYSTANDER_ADDRESS}
    async with connect(
        url,
        open_timeout=GIVE_UP_AFTER,
        max_size=2**24,
        max_queue=None,
        additional_headers=headers,
    ) as ws:
        welcome = json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "join", "room": room, "username": "bystander"}))
        while json.loads(await ws.recv()).get("type") != "joined":
            pass
        waiting: dict[str, float] = {}
        answered: asyncio.Queue[str] = asyncio.Queue()

        async def read() -> None:
            try:
                async for raw in ws:
                    event = json.loads(raw)
                    key = event.get("id")
                    kind = event.get("type")
                    if kind == "message" and event.get("username") == "bystander":
                        key = event.get("text")
                    if kind == "error":
                        failures.append(f"error {event.get('code')}")
                    if isinstance(key, str) and key in waiting:
                        latencies.append((time.perf_counter() - waiting.pop(key)) * 1000)
                        answered.put_nowait(key)
            except ConnectionClosed as exc:
                failures.append(f"closed {exc.rcvd.code if exc.rcvd else None}")

        reader = asyncio.ensure_future(read())
        stop = asyncio.ensure_future(_stdin_closed())
        print(json.dumps({"ready": True, "node": welcome.get("node")}), flush=True)
        serial = 0
        while not stop.done() and not reader.done():
            serial += 1
            key = f"p{serial}"
            frame: dict[str, Any] = (
                {"type": "message", "text": key}
                if serial % MESSAGE_EVERY == 0
                else {"type": "presence", "id": key}
            )
            waiting[key] = time.perf_counter()
            try:
                await ws.send(json.dumps(frame))
            except ConnectionClosed:
                break
            await asyncio.wait([stop, reader], timeout=PERIOD)
        # Whatever is still unanswered gets a chance, then counts as lost.
        deadline = time.perf_counter() + GIVE_UP_AFTER
        while waiting and time.perf_counter() < deadline and not reader.done():
            try:
                await asyncio.wait_for(answered.get(), deadline - time.perf_counter())
            except TimeoutError:
                break
        for key, sent in waiting.items():
            failures.append(f"no answer to {key}")
            latencies.append((time.perf_counter() - sent) * 1000)
        reader.cancel()
    return {"latencies_ms": latencies, "failures": failures}


def main() -> None:
    url, room = sys.argv[1], sys.argv[2]
    try:
        result = asyncio.run(run(url, room))
    except Exception as exc:  # reported, not raised: the test reads this line
        result = {"latencies_ms": [], "failures": [f"probe failed: {exc!r}"]}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
