"""The rooms one node listens to, whoever holds them, within the node's cap. No I/O.

Two kinds of holder subscribe a node to a room: its WebSocket members (core.rooms) and its event
streams (core.streams). Each room costs the node a broker subscription and its room state
whichever holds it, so ``ROOMCAST_MAX_ROOMS_PER_NODE`` counts the rooms either holds, once each:
counted for members only, one address held 40 streams of new rooms on a node capped at 12.
"""

from __future__ import annotations


class NodeRooms:
    def __init__(self, limit: int | None = None) -> None:
        self._limit = limit  # None: no bound
        # room -> how many kinds of holder hold it (1 or 2); a room is counted once.
        self._holders: dict[str, int] = {}

    @property
    def limit(self) -> int | None:
        return self._limit

    def admits(self, room: str) -> bool:
        """Whether one more holder of ``room`` stays within the cap (a held room always does)."""
        limit = self._limit
        return limit is None or room in self._holders or len(self._holders) < limit

    def refusal(self) -> str:
        return (
            f"this node holds its most rooms ({self._limit}); join a room that has members, "
            "or try again later"
        )

    def take(self, room: str) -> str | None:
        """A kind of holder takes ``room`` (once per kind, when it first holds it) if the cap
        :meth:`admits` it; else why not."""
        if not self.admits(room):
            return self.refusal()
        self._holders[room] = self._holders.get(room, 0) + 1
        return None

    def release(self, room: str) -> None:
        """A kind of holder let go of ``room`` (its last member or stream left)."""
        count = self._holders.get(room)
        if count is None:
            return
        if count > 1:
            self._holders[room] = count - 1
        else:
            del self._holders[room]

    def __len__(self) -> int:
        return len(self._holders)
