"""Typing per room, whoever sends it (red team 11): each is a frame to every member."""

from __future__ import annotations

from tests.support.wsharness import settle
from tests.unit.test_node import make_env


async def test_typing_past_the_rooms_burst_is_refused_and_others_rooms_are_not() -> None:
    env = await make_env(node_limits={"room_typing_rate": (0.001, 2)})
    ann = await env.joined("ann", "r", "s")
    bob = await env.joined("bob", "r")
    ann.events()
    bob.events()
    for client in (ann, bob, ann):
        client.send_json({"type": "typing", "room": "r"})
        await settle()
    refused = [e for e in ann.events() if e["type"] == "error"]
    assert [e["code"] for e in refused] == ["rate_limited"], refused
    assert refused[0]["reason"].startswith("room 'r'"), refused
    ann.send_json({"type": "typing", "room": "s"})  # another room's bucket is its own
    await settle()
    assert not [e for e in ann.events() if e["type"] == "error"]
