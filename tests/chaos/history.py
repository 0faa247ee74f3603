"""What one member saw and did, as plain data: the checker's only input.

A member is one logical client in one room across all its connections. Its log keeps every
server event about its room verbatim (JSON objects as received) plus what it sent, each with the
harness' monotonic time, so a history can be dumped to JSON and judged again later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Event = dict[str, Any]

CONNECTION = "conn"  # direction of the harness' own markers about the member's connection
CONNECTED = "connected"  # marker types
LOST = "lost"


@dataclass
class Entry:
    t: float
    direction: str  # "in": a server event; "out": a frame this member sent; CONNECTION
    event: Event


@dataclass
class MemberLog:
    member: str  # unique per run: client name (one room per client)
    room: str
    username: str
    entries: list[Entry] = field(default_factory=list)

    def received(self, t: float, event: Event) -> None:
        self.entries.append(Entry(t, "in", event))

    def sent(self, t: float, frame: Event) -> None:
        self.entries.append(Entry(t, "out", frame))

    def connection(self, t: float, kind: str, node: str | None) -> None:
        self.entries.append(Entry(t, CONNECTION, {"type": kind, "node": node}))

    def to_json(self) -> dict[str, Any]:
        return {
            "member": self.member,
            "room": self.room,
            "username": self.username,
            "entries": [[e.t, e.direction, e.event] for e in self.entries],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MemberLog:
        log = cls(data["member"], data["room"], data["username"])
        log.entries = [Entry(float(t), str(d), dict(ev)) for t, d, ev in data["entries"]]
        return log
