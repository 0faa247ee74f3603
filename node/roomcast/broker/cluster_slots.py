"""Redis Cluster topology, as pure data: which primary owns which hash slot, and redirections.

No I/O here: the cluster broker feeds it ``CLUSTER SLOTS`` replies and error replies, and the
unit tests feed it literals.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from redis.crc import key_slot
from redis.exceptions import AskError, MovedError, ResponseError

SLOT_COUNT: Final = 16384
CHANNEL_OPEN: Final = b"rc:{"
CHANNEL_CLOSE: Final = b"}"


@functools.lru_cache(maxsize=8192)
def sharded_channel(room: str) -> bytes:
    """The room's sharded channel: its hash tag is the room, like its keys ``rc:{room}:…``, so
    SPUBLISH from the room's scripts stays in their slot (room names cannot contain braces)."""
    return CHANNEL_OPEN + room.encode() + CHANNEL_CLOSE


def room_of_channel(channel: bytes) -> str:
    return channel[len(CHANNEL_OPEN) : -len(CHANNEL_CLOSE)].decode()


def slot_of(key: bytes) -> int:
    """Hash slot of a key or sharded channel (honours ``{hash tags}``)."""
    return int(key_slot(key))


@dataclass(frozen=True, slots=True, order=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Address:
        host, sep, port = text.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"expected host:port, got {text!r}")
        return cls(host.strip("[]"), int(port))


@dataclass(frozen=True, slots=True)
class Redirect:
    kind: Literal["MOVED", "ASK"]
    slot: int
    address: Address


def redirect_of(error: BaseException) -> Redirect | None:
    """The redirection an error reply carries (``MOVED 3999 10.0.0.2:6379`` or ``ASK …``)."""
    if isinstance(error, AskError):  # MovedError is an AskError in redis-py
        kind: Literal["MOVED", "ASK"] = "MOVED" if isinstance(error, MovedError) else "ASK"
        return Redirect(kind, int(error.slot_id), Address(str(error.host), int(error.port)))
    if not isinstance(error, ResponseError):
        return None
    # A parser that did not classify the error leaves its text whole.
    parts = str(error).split()
    if len(parts) != 3 or parts[0] not in ("MOVED", "ASK") or not parts[1].isdigit():
        return None
    try:
        address = Address.parse(parts[2])
    except ValueError:
        return None
    return Redirect("MOVED" if parts[0] == "MOVED" else "ASK", int(parts[1]), address)


class SlotMap:
    """Owner (primary) of each of the 16384 slots; ``None`` where no primary serves a slot."""

    __slots__ = ("_owners",)

    def __init__(self, owners: Sequence[Address | None]) -> None:
        if len(owners) != SLOT_COUNT:
            raise ValueError(f"a slot map has {SLOT_COUNT} entries, not {len(owners)}")
        self._owners = tuple(owners)

    @classmethod
    def from_ranges(cls, ranges: Iterable[tuple[int, int, Address]]) -> SlotMap:
        owners: list[Address | None] = [None] * SLOT_COUNT
        for first, last, address in ranges:
            if not 0 <= first <= last < SLOT_COUNT:
                raise ValueError(f"bad slot range {first}-{last}")
            owners[first : last + 1] = [address] * (last - first + 1)
        return cls(owners)

    @classmethod
    def from_cluster_slots(cls, reply: Any, queried: Address) -> SlotMap:
        """Parse ``CLUSTER SLOTS``: ``[[first, last, [host, port, id, …], replicas…], …]``.

        A primary announced without a host (``""`` or ``"?"``) is the node that was asked.
        """
        ranges = []
        for entry in reply:
            first, last, primary = int(entry[0]), int(entry[1]), entry[2]
            raw_host = primary[0]
            host = raw_host.decode() if isinstance(raw_host, bytes) else str(raw_host)
            if host in ("", "?"):
                host = queried.host
            ranges.append((first, last, Address(host, int(primary[1]))))
        return cls.from_ranges(ranges)

    def owner(self, slot: int) -> Address | None:
        return self._owners[slot]

    @property
    def complete(self) -> bool:
        return all(owner is not None for owner in self._owners)

    def primaries(self) -> set[Address]:
        return {owner for owner in self._owners if owner is not None}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SlotMap) and self._owners == other._owners

    def __hash__(self) -> int:
        return hash(self._owners)
