"""Where a client is in a room's stream: the epoch and the last offset it delivered.

This is what makes resume exactly-once: rejoin with ``since`` = this position, and never deliver
an offset at or below it again, even if a server (or a bug) sent it twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from roomcast.client.events import ChatMessage, Gap, Joined, Loss, Resumed

LEFT_EPOCHS_KEPT = 4  # as many as a node remembers (roomcast.broker.live_gaps)


@dataclass
class RoomCursor:
    room: str
    epoch: str | None = None
    offset: int = 0
    duplicates_dropped: int = 0
    # A loss notice already told of the hole before the next message (its end was unknown).
    offset_hole_announced: bool = False
    # Where the client stood in the epoch an ``epoch_changed`` notice left, while the new
    # epoch had no message yet (``new_epoch`` null): a rejoin resumes from there, so that the
    # server says what the new epoch holds by then. A plain join would skip it in silence.
    left: tuple[str, int] | None = None
    # The last offset delivered in each epoch an ``epoch_changed`` notice left (the last few):
    # a notice back into one of them (a primary that still held it is primary again) resumes
    # after that offset, as the server goes on from there.
    left_epochs: dict[str, int] = field(default_factory=dict)

    def since(self) -> dict[str, int | str] | None:
        """The ``since`` of a rejoin, or None when nothing was seen yet (a plain join)."""
        if self.epoch is None:
            if self.left is None:
                return None
            epoch, offset = self.left
            return {"offset": offset, "epoch": epoch}
        return {"offset": self.offset, "epoch": self.epoch}

    def on_joined(self, joined: Joined) -> Resumed | Gap | None:
        """Move to the join's position; say whether a resume kept the stream whole."""
        if joined.already:
            return None
        if joined.recovered is True and joined.epoch == self.epoch:
            return Resumed(self.room, joined.epoch, self.offset)
        self.epoch, self.offset, self.left = joined.epoch, joined.offset, None
        if joined.recovered is None:
            return None
        # recovered false, or "recovered" into another epoch (which would be a server bug).
        return Gap(self.room, joined.reason or "epoch_changed", self.epoch, self.offset)

    def accept(self, message: ChatMessage) -> tuple[bool, Gap | None]:
        """Whether to deliver ``message``, and the gap it reveals, if any."""
        if self.epoch is None:
            # The first message seen, or the first of the epoch a loss notice announced
            # (delivered from its offset 1 on).
            self.epoch, self.offset, self.left = message.epoch, message.offset, None
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
        if message.offset > self.offset + 1 and not self.offset_hole_announced:
            gap = Gap(self.room, "offsets_skipped", self.epoch, self.offset)
        self.offset_hole_announced = False
        self.offset = message.offset
        return True, gap

    def on_loss(self, loss: Loss) -> Gap | None:
        """The server gave up on some offsets: continue after them, and say so (once)."""
        if loss.reason == "epoch_changed":
            if self.epoch is not None and loss.epoch != self.epoch:
                return None  # about an epoch this client already left
            if self.epoch is not None:
                self._leave(self.epoch, self.offset)
            if loss.new_epoch is None and self.epoch is not None:
                self.left = (self.epoch, self.offset)
            # The new epoch's messages follow from its offset 1 (or, back in an epoch left
            # before, from after the last one delivered in it): none of them is a gap.
            resume = self.left_epochs.pop(loss.new_epoch, 0) if loss.new_epoch else 0
            self.epoch, self.offset = loss.new_epoch, resume
            return Gap(self.room, loss.reason, loss.new_epoch or "", resume)
        if self.epoch is None and loss.epoch:
            # The epoch the room started over in, named before any of its messages reached
            # us (the node's catch-up of it gave up, or found its start trimmed): its
            # offsets count from 1, and this notice is about the first of them.
            self.epoch, self.offset, self.left = loss.epoch, 0, None
        if loss.epoch != self.epoch:
            return None
        if loss.to_offset is None:
            # Up to the next message, whose offset ends the hole: no second Gap for it.
            self.offset_hole_announced = True
        else:
            self.offset = max(self.offset, loss.to_offset)
        return Gap(self.room, loss.reason, loss.epoch, self.offset)

    def _leave(self, epoch: str, offset: int) -> None:
        self.left_epochs.pop(epoch, None)
        self.left_epochs[epoch] = offset
        while len(self.left_epochs) > LEFT_EPOCHS_KEPT:
            del self.left_epochs[next(iter(self.left_epochs))]
