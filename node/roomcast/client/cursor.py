"""Where a client is in a room's stream: the epoch and the last offset it delivered.

This is what makes resume exactly-once: rejoin with ``since`` = this position, and never deliver
an offset at or below it again, even if a server (or a bug) sent it twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from roomcast.client.events import ChatMessage, Gap, Joined, Resumed


@dataclass
class RoomCursor:
    room: str
    epoch: str | None = None
    offset: int = 0
    duplicates_dropped: int = 0

    def since(self) -> dict[str, int | str] | None:
        """The ``since`` of a rejoin, or None when nothing was seen yet (a plain join)."""
        if self.epoch is None:
            return None
        return {"offset": self.offset, "epoch": self.epoch}

    def on_joined(self, joined: Joined) -> Resumed | Gap | None:
        """Move to the join's position; say whether a resume kept the stream whole."""
        if joined.already:
            return None
        if joined.recovered is True and joined.epoch == self.epoch:
            return Resumed(self.room, joined.epoch, self.offset)
        self.epoch, self.offset = joined.epoch, joined.offset
        if joined.recovered is None:
            return None
        # recovered false, or "recovered" into another epoch (which would be a server bug).
        return Gap(self.room, joined.reason or "epoch_changed", self.epoch, self.offset)

    def accept(self, message: ChatMessage) -> tuple[bool, Gap | None]:
        """Whether to deliver ``message``, and the gap it reveals, if any."""
        if self.epoch is None:
            self.epoch, self.offset = message.epoch, message.offset
            return True, None
        if message.epoch != self.epoch:
            # The room's history was lost under a live connection (Redis restarted empty):
            # offsets start again, and whatever came before this one in the new epoch is unknown.
            self.epoch, self.offset = message.epoch, message.offset
            return True, Gap(self.room, "epoch_changed", message.epoch, message.offset)
        if message.offset <= self.offset:
            self.duplicates_dropped += 1
            return False, None
        gap = None
        if message.offset > self.offset + 1:
            gap = Gap(self.room, "offsets_skipped", self.epoch, self.offset)
        self.offset = message.offset
        return True, gap
