"""Frame floods: one connection writes pre-built blocks of frames as fast as the socket takes
them, until the server closes it, a frame budget is spent or the time is up."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from tests.adversarial.rawws import RawWebSocket

BLOCK_FRAMES = 10_000


@dataclass
class FloodOutcome:
    frames_written: int
    seconds: float
    close_code: int | None
    closed_after: float | None  # seconds from the flood's start to the end of the socket

    def describe(self) -> str:
        closed = (
            f"closed {self.close_code} after {self.closed_after:.2f} s"
            if self.closed_after is not None
            else "never closed"
        )
        return f"{self.frames_written} frames in {self.seconds:.1f} s, {closed}"


async def flood(
    ws: RawWebSocket, one_frame: bytes, *, max_frames: int, seconds: float
) -> FloodOutcome:
    block = one_frame * BLOCK_FRAMES
    start = time.monotonic()
    written = 0
    while written < max_frames and time.monotonic() - start < seconds:
        if not ws.send_bytes(block):
            break
        written += BLOCK_FRAMES
        try:
            await asyncio.wait_for(ws.writer.drain(), 0.5)
        except TimeoutError:
            pass  # the far side stopped reading; keep the clock running
        except (ConnectionError, RuntimeError):
            break
    elapsed = time.monotonic() - start
    ended = ws.received.ended_at
    return FloodOutcome(
        written,
        elapsed,
        ws.received.close_code,
        None if ended is None else ended - start,
    )
