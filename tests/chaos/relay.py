"""A TCP relay between one node and Redis that can blackhole the link: ``python -m tests.chaos.relay
LISTEN_PORT TARGET_PORT``.

SIGUSR1 starts a blackhole, SIGUSR2 ends it. In a blackhole the relay stops reading and writing
in both directions and makes no new upstream connection, but closes nothing: bytes wait in the
kernel's buffers, windows fill, no FIN and no RST reach either side — what a dropped route or a
silent firewall looks like to both ends. When it ends, whatever was in flight moves on, and a
side that gave up in the meantime finds its peer's FIN then. It prints ``relay listening`` when
ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys


class Relay:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.open = asyncio.Event()
        self.open.set()

    async def pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await self.open.wait()
                data = await reader.read(65536)
                if not data:
                    break
                await self.open.wait()  # a read that was under way when the blackhole began
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                writer.close()

    async def serve(self, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        await self.open.wait()
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            down_w.close()
            return
        await asyncio.gather(self.pump(down_r, up_w), self.pump(up_r, down_w))


async def main(listen_port: int, target_port: int) -> None:
    relay = Relay(target_port)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, relay.open.clear)
    loop.add_signal_handler(signal.SIGUSR2, relay.open.set)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = await asyncio.start_server(relay.serve, "127.0.0.1", listen_port)
    print("relay listening", flush=True)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
