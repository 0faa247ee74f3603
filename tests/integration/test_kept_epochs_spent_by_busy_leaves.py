"""A silent room keeps its epoch after its last member left, within that client's budget of kept
epochs (docs/security.md), on REAL Redis through a real node. That budget was spent by every
leave of the client, also of rooms that leave could not empty (other members still in them
here) or that had a message: a user leaving busy rooms as it closes its tabs used up its budget,
and its own silent room, left last, was forgotten, its rejoin told ``epoch_changed`` for a
history that never was. Leaves that cannot keep an epoch now spend nothing of it."""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster

from roomcast.broker.scripts import room_keys
from tests.support.cluster import ready, until
from tests.support.wsclient import Client

pytestmark = pytest.mark.integration

# A small budget of kept epochs per client (the join bucket's rate and burst): 6, then 1 in 4 s.
BURST = 6
ENV = {
    "ROOMCAST_CLIENT_JOIN_RATE_BURST": str(BURST),
    "ROOMCAST_CLIENT_JOIN_RATE_PER_SECOND": "0.25",
}


async def connect_as(url: str, address: str) -> Client:
    """A client at ``address`` (open mode keys clients by address; loopback is a trusted
    proxy, so its X-Forwarded-For names the client)."""
    return await Client.connect(url, additional_headers={"X-Forwarded-For": address})


async def rejoin_since(url: str, room: str, joined: dict[str, Any]) -> dict[str, Any]:
    """A rejoin with ``since`` = where ``joined`` left the client, from a third address."""
    client = await connect_as(url, "10.0.0.3")
    since = {"offset": joined["offset"], "epoch": joined["epoch"]}
    await client.send(type="join", room=room, username="u", since=since)
    rejoined = await client.recv_type("joined", room=room)
    await client.close()
    return rejoined


async def test_leaving_busy_rooms_does_not_spend_the_budget_of_kept_epochs() -> None:
    with LocalCluster(1, nginx=False, node_env=ENV) as cluster:
        node = cluster.nodes[0]
        db = redis.Redis(port=cluster.redis_port)
        await until(partial(ready, node), 20, f"{node.node_id} ready")
        tag = uuid.uuid4().hex[:8]
        silent = f"silent-{tag}"
        busy = [f"busy-{tag}-{index}" for index in range(BURST)]
        other = await connect_as(node.url, "10.0.0.2")
        for room in busy:
            await other.join(room, "other")
        alone = await connect_as(node.url, "10.0.0.1")
        joined = await alone.join(silent, "u")
        tabs = await connect_as(node.url, "10.0.0.1")
        for room in busy:
            await tabs.join(room, "u")
        # The user closes its tabs: BURST leaves of rooms the other client stays in, then the
        # leave of its silent room.
        await tabs.close()
        await until(
            lambda: all(db.hlen(room_keys(room)[3]) == 1 for room in busy),
            10,
            "the busy rooms' leaves to reach Redis",
        )
        await alone.close()
        await until(lambda: db.exists(room_keys(silent)[3]) == 0, 10, "the last leave")
        rejoined = await rejoin_since(node.url, silent, joined)
        assert rejoined["recovered"] is True and rejoined["epoch"] == joined["epoch"], rejoined
        await other.close()
        db.close()
