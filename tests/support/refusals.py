"""A Redis that refuses writes for a while (``MISCONF``, a user stripped of a right): how many
sends were refused, how a join is answered, and the service back once Redis takes writes."""

from __future__ import annotations

import redis

from tests.support.delivery import Traffic, finish_refusals_true
from tests.support.wsclient import Client


def refusals(traffic: Traffic) -> int:
    """Sends answered ``unavailable`` or ``unconfirmed`` so far."""
    return sum(len(sender.refused) + len(sender.unconfirmed) for sender in traffic.senders)


async def join_answer(url: str, room: str) -> dict[str, object]:
    """The first answer to a join: ``joined`` or an ``error``."""
    client = await Client.connect(url)
    try:
        await client.send(type="join", room=room, username="late-joiner", id="late-join")
        return await client.recv_where(
            lambda e: e["type"] == "joined" or (e["type"] == "error" and e.get("id") == "late-join")
        )
    finally:
        await client.close()


async def serves_again(
    traffic: Traffic, url: str, admin: redis.Redis, rooms: list[str], fault: str
) -> None:
    """Once Redis takes writes again: sends acknowledged, a join admitted, then the guarantee
    over every member with no ``loss`` and no refused message kept."""
    await traffic.more_acks(10)
    joined = await join_answer(url, rooms[0])
    assert joined["type"] == "joined", joined
    await finish_refusals_true(traffic, admin, rooms, fault)
