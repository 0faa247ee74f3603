"""The floor under "node CPU per delivery": what one socket write of a small frame costs a
Python process on this machine, with nothing else to do.

The fan-out target asks roomcast's nodes for at most 0.25x the Node baseline's CPU per delivered
message at 10,000 deliveries/s (rooms of 100, 100 messages/s). At that rate a node has one frame
per recipient per wake-up, so each delivery is one ``write()`` to a loopback TCP socket, and on
loopback the sender also pays for the receiver's TCP processing. This script measures exactly
that and nothing more: uvloop transports, one pre-built 154-byte frame written to each of 33
sockets (a node's share of a 100-member room) 100 times a second, read by another process. With
``--batch B`` it writes B frames per write (what coalescing does at higher rates).

Run: ``.venv/bin/python bench/write_floor.py`` (about 20 s); loopback only, bounded, it stops
its reader process itself. Writes ``bench/results/write_floor.md``. ``make bench`` runs it too,
one frame per write at the fan-out scenario's rate and room share, in the same run as the
fan-out (``--json``: one JSON line, no file), for the per-delivery target.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import selectors
import socket
import time
from pathlib import Path

import uvloop

RESULTS = Path(__file__).parent / "results" / "write_floor.md"
FRAME = b"\x81\x7e\x00\x96" + b"x" * 150  # a text frame of a typical chat message


def _read_until(deadline: float, sockets: list[socket.socket]) -> None:
    selector = selectors.DefaultSelector()
    for sock in sockets:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    while time.monotonic() < deadline:
        for key, _ in selector.select(0.2):
            with contextlib.suppress(BlockingIOError):
                key.fileobj.recv(1 << 16)  # type: ignore[union-attr]


async def _measure(recipients: int, rate: float, seconds: float, batch: int) -> float:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(recipients)
    port = listener.getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(recipients)]
    servers = [listener.accept()[0] for _ in range(recipients)]
    listener.close()
    reader = os.fork()
    if reader == 0:
        _read_until(time.monotonic() + seconds + 3, clients)
        os._exit(0)
    loop = asyncio.get_running_loop()
    transports = []
    for sock in servers:
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, sock)
        transports.append(transport)
    data = FRAME * batch
    deliveries = 0
    cpu_start, wall_start = time.process_time(), time.monotonic()
    while time.monotonic() - wall_start < seconds:
        for transport in transports:
            transport.write(data)
        deliveries += recipients * batch
        await asyncio.sleep(batch / rate)
    cpu = time.process_time() - cpu_start
    for transport in transports:
        transport.close()
    await asyncio.to_thread(os.waitpid, reader, 0)
    return cpu * 1e6 / deliveries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=33)
    parser.add_argument("--rate", type=float, default=100.0, help="messages per second")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batches", default="1,2,4,8", help="frames per write, comma list")
    parser.add_argument("--json", action="store_true", help="print one JSON line, no file")
    args = parser.parse_args()
    rows = []
    for batch in (int(b) for b in args.batches.split(",") if b):
        micros = uvloop.run(_measure(args.recipients, args.rate, args.seconds, batch))
        rows.append((batch, micros))
        if not args.json:
            print(f"{batch} frame(s) per write: {micros:.2f} µs CPU per delivery", flush=True)
    if args.json:
        print(json.dumps({
            "recipients": args.recipients, "messages_per_s": args.rate, "seconds": args.seconds,
            "cpu_us_per_delivery": {str(batch): micros for batch, micros in rows},
        }))  # fmt: skip
        return 0
    lines = [
        "# Write floor: CPU per delivery of bare socket writes (bench/write_floor.py)",
        "",
        f"{args.recipients} loopback sockets, {args.rate:g} messages/s, {args.seconds:g} s per "
        "row, uvloop, a 154-byte frame; the reader is another process.",
        "",
        "| frames per write | CPU µs per delivery |",
        "| ---: | ---: |",
        *(f"| {batch} | {micros:.2f} |" for batch, micros in rows),
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
