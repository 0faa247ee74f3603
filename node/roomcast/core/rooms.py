"""Room bookkeeping on one node: who is in which room, locally. No I/O.

The registry answers the two questions the broker cares about: is this the first local member of
a room (subscribe) and was that the last one (unsubscribe). It also remembers, per connection,
the order of its joins, because a frame without ``"room"`` goes to the room joined last (the
article's behaviour).
"""

from __future__ import annotations

import sys
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from roomcast.core.node_rooms import NodeRooms

M = TypeVar("M", bound=Hashable)


@dataclass(frozen=True, slots=True)
class JoinResult:
    first_local_member: bool
    already_member: bool


class TooManyRoomsError(Exception):
    pass


class RoomRegistry(Generic[M]):
    def __init__(self, max_rooms_per_member: int, node_rooms: NodeRooms | None = None) -> None:
        self._max_rooms = max_rooms_per_member
        # The node's rooms, at most its cap, shared with its event streams. Each room with a
        # member keeps a presence hash in Redis that nothing evicts (~1.2 KB and 4 keys with the
        # room's offset keys): many addresses joining new rooms within their own limits would
        # otherwise fill Redis up to maxmemory, where every write fails.
        self._node_rooms = node_rooms if node_rooms is not None else NodeRooms()
        # room -> {member: username} of members receiving the room's events (live); dicts keep
        # join order, which keeps fan-out order stable.
        self._rooms: dict[str, dict[M, str]] = {}
        # room -> {member: username} of members whose join is still in progress.
        self._joining: dict[str, dict[M, str]] = {}
        # member -> {room: username}, in join order (the last key is the current room).
        self._memberships: dict[M, dict[str, str]] = {}

    def join(self, member: M, room: str, username: str) -> JoinResult:
        """Add ``member`` as joining: it counts as a local member, but gets no events until
        :meth:`activate`."""
        rooms = self._memberships.get(member)
        if rooms is not None and room in rooms:
            # Re-joining makes the room current again.
            rooms[room] = rooms.pop(room)
            return JoinResult(first_local_member=False, already_member=True)
        if rooms is not None and len(rooms) >= self._max_rooms:
            raise TooManyRoomsError(f"a connection may be in at most {self._max_rooms} rooms")
        first = room not in self._rooms and room not in self._joining
        if first and (refusal := self._node_rooms.take(room)) is not None:
            raise TooManyRoomsError(refusal)
        if rooms is None:
            rooms = self._memberships[member] = {}
        # One string per room name, not one per member that joined it (each join's command
        # brings its own copy).
        room = sys.intern(room)
        rooms[room] = username
        self._joining.setdefault(room, {})[member] = username
        return JoinResult(first_local_member=first, already_member=False)

    def activate(self, member: M, room: str) -> bool:
        """The join is complete: ``member`` receives the room's events from now on."""
        joining = self._joining.get(room)
        if joining is None or member not in joining:
            return False
        username = joining.pop(member)
        if not joining:
            del self._joining[room]
        self._rooms.setdefault(room, {})[member] = username
        return True

    def is_live(self, member: M, room: str) -> bool:
        return member in self._rooms.get(room, ())

    def leave(self, member: M, room: str) -> bool:
        """Remove ``member`` from ``room``; True when it was the room's last local member."""
        rooms = self._memberships.get(member)
        if rooms is None or room not in rooms:
            return False
        del rooms[room]
        if not rooms:
            del self._memberships[member]
        for table in (self._rooms, self._joining):
            members = table.get(room)
            if members is not None and member in members:
                del members[member]
                if not members:
                    del table[room]
        last = room not in self._rooms and room not in self._joining
        if last:
            self._node_rooms.release(room)
        return last

    def leave_all(self, member: M) -> list[tuple[str, str, bool]]:
        """Remove ``member`` everywhere: (room, username, was_last_local_member) for each room."""
        rooms = self._memberships.get(member)
        if rooms is None:
            return []
        result = []
        for room, username in list(rooms.items()):
            result.append((room, username, self.leave(member, room)))
        return result

    def current_room(self, member: M) -> str | None:
        rooms = self._memberships.get(member)
        if not rooms:
            return None
        return next(reversed(rooms))

    def username(self, member: M, room: str) -> str | None:
        rooms = self._memberships.get(member)
        return None if rooms is None else rooms.get(room)

    def rooms_of(self, member: M) -> list[str]:
        return list(self._memberships.get(member, ()))

    def members(self, room: str) -> dict[M, str]:
        """Live view of a room's local members; callers must not mutate it."""
        members = self._rooms.get(room)
        return {} if members is None else members

    def all_members(self, room: str) -> dict[M, str]:
        """Live and joining members (what presence must show for this node)."""
        return {**self._rooms.get(room, {}), **self._joining.get(room, {})}

    def has_room(self, room: str) -> bool:
        return room in self._rooms or room in self._joining

    def rooms(self) -> list[str]:
        return list({**self._rooms, **self._joining})

    @property
    def room_count(self) -> int:
        # Joins in flight are few; the live rooms may be many thousands (no set union here).
        rooms = self._rooms
        return len(rooms) + sum(1 for room in self._joining if room not in rooms)

    @property
    def member_count(self) -> int:
        return len(self._memberships)
