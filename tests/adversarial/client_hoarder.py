"""A Python-client application that never reads its events: ``python -m
tests.adversarial.client_hoarder URL`` joins room ``r`` and sleeps until stdin closes. Its RSS is
what a malicious server can make the client hold."""

from __future__ import annotations

import asyncio
import sys

from roomcast.client import RoomcastClient


async def main(url: str) -> None:
    async with RoomcastClient(url, "ann", rooms=["r"], ping_interval=None):
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
