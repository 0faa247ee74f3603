"""Joining a room mid-stream without gap or duplicate. No I/O.

A join (with or without ``since``) goes like this: the node subscribes to the room, then one Redis
script records the member, publishes its ``user_joined`` and reads the room's latest offset L
(and, with ``since``, the missed messages after the client's offset). Because that script is
atomic, its ``user_joined`` splits the room's stream exactly at L: what the node receives before
it is in history (or precedes the join), what comes after it is new. The script's reply and that
marker travel on different connections, in either order, so the joining client gets nothing
before the marker, and what comes after it is held until the reply is in: then the missed
messages, then the held ones, then live.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from roomcast.broker import JoinReply
from roomcast.core.bigroom import Mark
from roomcast.wire.recovery import RECOVERED


@dataclass(slots=True)
class CatchUp:
    """Live events of a room for one connection whose join is in flight."""

    limit: int  # events held at most
    # and bytes (0: no bound): with the catch-up they go to one client at once, and must fit
    # its send bound (half of it: the other half is for the missed messages)
    byte_limit: int = 0
    marker_seen: bool = False
    # When this attempt's user_joined was packed (its envelope's origin time): the marker is
    # that envelope only. A failed attempt on the same connection published one too, which
    # may still be on its way and would mark a point before this attempt's script.
    announced_at: float | None = None
    held: list[tuple[int, bytes]] = field(default_factory=list)
    held_bytes: int = 0
    overflowed: bool = False
    # Where the room's big-room count was at the marker (core.bigroom.BigRooms.mark).
    presence_mark: Mark | None = None

    def see(self, offset: int, event: bytes, is_marker: bool) -> None:
        """An event on the room's channel, in the broker's order."""
        if is_marker:
            self.marker_seen = True
        elif not self.marker_seen:
            return  # before our join point: in the history read, or before we joined
        elif len(self.held) < self.limit and (
            not self.byte_limit or self.held_bytes + len(event) <= self.byte_limit
        ):
            self.held.append((offset, event))
            self.held_bytes += len(event)
        else:
            # Bounded: a room so busy that the buffer fills during one Redis round trip gets
            # an honest "not recovered" instead of unbounded memory.
            self.overflowed = True

    def finish(self, reply: JoinReply) -> list[bytes]:
        """The events to send, in order: missed history, then the held live events."""
        out = list(reply.missed) if reply.status == RECOVERED else []
        # Offsets after L only (and unsequenced events): a safety net; the marker split the
        # stream at L already.
        out.extend(event for offset, event in self.held if offset == 0 or offset > reply.offset)
        self.held.clear()
        self.held_bytes = 0
        return out
