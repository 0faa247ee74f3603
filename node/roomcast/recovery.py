"""Joining a room mid-stream without gap or duplicate. No I/O.

A join (with or without ``since``) goes like this: the node subscribes to the room, then one Redis
script records the member and reads the room's latest offset L (and, with ``since``, the missed
messages after the client's offset). Live publications can reach the node both before and after
that script ran, so until its reply arrives they are held here; then the client gets the missed
messages, and of the held live ones only those after L (the others are already in the history
read) or without an offset (typing, joins and leaves). After that it is live.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

RECOVERED: Final = "recovered"
EPOCH_CHANGED: Final = "epoch_changed"
TOO_OLD: Final = "too_old"
NOT_REQUESTED: Final = "not_requested"


@dataclass(frozen=True, slots=True)
class Since:
    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class JoinReply:
    """What the join script answered."""

    epoch: str
    offset: int  # the room's latest offset when the script ran
    status: str  # RECOVERED, EPOCH_CHANGED, TOO_OLD or NOT_REQUESTED
    missed: list[bytes] = field(default_factory=list)  # oldest first, offsets since+1 .. offset


@dataclass(slots=True)
class CatchUp:
    """Live events held for one connection while its join script is in flight."""

    limit: int
    held: list[tuple[int, bytes]] = field(default_factory=list)
    overflowed: bool = False

    def hold(self, offset: int, event: bytes) -> None:
        if len(self.held) < self.limit:
            self.held.append((offset, event))
        else:
            # Bounded: a room so busy that the buffer fills during one Redis round trip gets
            # an honest "not recovered" instead of unbounded memory.
            self.overflowed = True

    def finish(self, reply: JoinReply) -> list[bytes]:
        """The events to send, in order: missed history, then held live events after it."""
        out = list(reply.missed) if reply.status == RECOVERED else []
        out.extend(event for offset, event in self.held if offset == 0 or offset > reply.offset)
        self.held.clear()
        return out
