"""A member of a room that reads everything it is sent, as its own process: a user on another
machine, whose reading the attack must not slow.

The attacking test runs at idle priority on one CPU while the bystander is timed
(:func:`tests.adversarial.bystander.attacker_on_one_cpu`). A member read by the test's own
event loop was starved with it: on a loaded machine it fell further behind than the room's
history holds and the node closed it 1013 (29 of 68 messages read), which measured the test's
process, not the node. Here the member keeps its own process at normal priority.

``python -m tests.adversarial.room_member PORT ROOM USERNAME`` joins ``ROOM`` on the node at
``PORT`` (127.0.0.1) and prints one JSON line ``{"ready": true}``; it then reads the number of
chat messages to wait for from stdin, and prints ``{"messages": N, "close_code": C}`` once it
has read that many, the connection ended, or a (scaled) minute passed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from typing import Any

from tests.adversarial.bursts import join
from tests.adversarial.devcluster_shim import scaled
from tests.adversarial.rawws import RawWebSocket
from tests.adversarial.reporting_child import ReportingChild

GIVE_UP_AFTER = 60.0


def messages(ws: RawWebSocket) -> int:
    return sum(1 for e in ws.received.texts if e.get("type") == "message")


async def run(port: int, room: str, username: str) -> dict[str, Any]:
    ws = await RawWebSocket.connect("127.0.0.1", port)
    try:
        await join(ws, room, username)
        print(json.dumps({"ready": True}), flush=True)
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        wanted = int(line)
        got = ws.received
        try:
            async with asyncio.timeout(scaled(GIVE_UP_AFTER)):
                while messages(ws) < wanted and not got.ended.is_set():
                    got.arrived.clear()
                    await got.arrived.wait()
        except TimeoutError:
            pass
        return {"messages": messages(ws), "close_code": got.close_code, "error": None}
    finally:
        await ws.close()


@dataclass
class MemberReport:
    messages: int
    close_code: int | None
    error: str | None  # the member's own failure, if it had one


class RoomMember:
    """The member's process, joined on return (start it before any attack: a process started
    under :func:`attacker_on_one_cpu` would inherit the attacker's idle priority)."""

    def __init__(self, port: int, room: str, username: str) -> None:
        self.child = ReportingChild(
            "tests.adversarial.room_member", str(port), room, username,
            what=f"member {username} could not join {room} on {port}",
        )  # fmt: skip

    def finish(self, wanted: int) -> MemberReport:
        """Once it has read ``wanted`` messages (or was closed, or gave up): what it read."""
        data = self.child.report(f"{wanted}\n", timeout=scaled(GIVE_UP_AFTER + 30))
        return MemberReport(int(data["messages"]), data["close_code"], data["error"])

    def kill(self) -> None:
        self.child.kill()


def main() -> None:
    port, room, username = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    try:
        result = asyncio.run(run(port, room, username))
    except Exception as exc:  # reported, not raised: the test reads this line
        result = {"messages": 0, "close_code": None, "error": repr(exc)}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
