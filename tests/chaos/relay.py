"""A TCP relay between one node and Redis that can blackhole the link: ``python -m tests.chaos.relay
LISTEN_PORT TARGET_PORT``. It prints ``relay listening`` when ready, and ``state N MODE`` (N
counting from 1) once it has taken each signal, so that a caller awaits the change.

Two kinds of blackhole, both silent (no FIN, no RST while they last):

- SIGUSR1, *hold*: the relay stops reading and writing both ways and makes no new upstream
  connection. Bytes wait in the kernel's buffers, windows fill. When it ends (SIGUSR2), what was
  in flight moves on, late: what TCP retransmission does after a short partition.
- SIGHUP, *drop*: whatever either side sends is read and thrown away. When it ends (SIGUSR2),
  every connection that lived through it is reset (RST) both ways: the partition outlasted TCP,
  and the peers find their connection gone once packets flow again.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import struct
import sys


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (linger 0), as a peer whose kernel forgot the connection answers."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()


class Relay:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.open = asyncio.Event()
        self.open.set()
        self.dropping = False
        self.active: set[asyncio.StreamWriter] = set()
        self.doomed: set[asyncio.StreamWriter] = set()  # lived through a drop: reset on heal
        self.changes = 0

    def announce(self, mode: str) -> None:
        self.changes += 1
        print(f"state {self.changes} {mode}", flush=True)

    def hold(self) -> None:
        self.open.clear()
        self.announce("hold")

    def drop(self) -> None:
        self.dropping = True
        self.doomed |= self.active
        self.announce("drop")

    def heal(self) -> None:
        self.dropping = False
        for writer in self.doomed:
            _reset(writer)
        self.doomed.clear()
        self.open.set()
        self.announce("open")

    async def pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await self.open.wait()
                data = await reader.read(65536)
                if not data:
                    break
                await self.open.wait()  # a read that was under way when a hold began
                if self.dropping or writer in self.doomed:
                    continue  # lost on the way
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            self.active.discard(writer)
            with contextlib.suppress(OSError):
                writer.close()

    async def serve(self, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        await self.open.wait()
        if self.dropping:  # the SYN got through the relay's kernel; nothing else will
            self.doomed.add(down_w)
            with contextlib.suppress(OSError):
                while await down_r.read(65536):
                    pass
            return
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            down_w.close()
            return
        self.active |= {up_w, down_w}
        await asyncio.gather(self.pump(down_r, up_w), self.pump(up_r, down_w))


async def main(listen_port: int, target_port: int) -> None:
    relay = Relay(target_port)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, relay.hold)
    loop.add_signal_handler(signal.SIGHUP, relay.drop)
    loop.add_signal_handler(signal.SIGUSR2, relay.heal)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = await asyncio.start_server(relay.serve, "127.0.0.1", listen_port)
    print("relay listening", flush=True)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
