"""An operator's mistake: two nodes started with the same ``ROOMCAST_NODE_ID`` (a scaled compose
service or a copied StatefulSet pod naming every replica alike), beside a third node, all sharing
one room. One twin is then SIGKILLed.

The other twin must not be taken for the dead one: its members are neither reaped nor announced
``user_left``, nothing acknowledged is lost, and presence afterwards is exact (only the dead
twin's member is gone). Checked by offset: every member is sent each acknowledged message of the
room once, in order, with no gap.
"""

from __future__ import annotations

import signal
from functools import partial

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster

from tests.support.cluster import QUICK_ENV
from tests.support.delivery import in_thread
from tests.support.wsclient import Client, Event

pytestmark = pytest.mark.integration

ROOM = "twins"
PRESENCE_TTL = 1.5
ENV = dict(QUICK_ENV, ROOMCAST_PRESENCE_TTL=str(PRESENCE_TTL))
PER_ROUND = 5


async def send_acked(client: Client, prefix: str) -> list[int]:
    """``PER_ROUND`` messages from ``client``, each acknowledged: their offsets."""
    offsets = []
    for index in range(PER_ROUND):
        request = f"{prefix}-{index}"
        await client.send(type="message", room=ROOM, text=request, id=request)

        def answer(event: Event, request: str = request) -> bool:
            return event.get("id") == request and event["type"] in ("ack", "error")

        ack = await client.recv_where(answer)
        assert ack["type"] == "ack", ack
        offsets.append(int(ack["offset"]))
    return offsets


async def test_twin_node_ids_one_killed_the_other_keeps_its_members() -> None:
    with LocalCluster(1, nginx=False, node_env=ENV) as cluster:
        twin_id = cluster.nodes[0].node_id
        cluster.start_node({"ROOMCAST_NODE_ID": twin_id})
        cluster.start_node()
        admin = redis.Redis(port=cluster.redis_port)
        doomed, twin, other = [await Client.connect(node.url) for node in cluster.nodes]
        try:
            assert doomed.node == twin.node == twin_id != other.node
            assert doomed.connection_id != twin.connection_id
            for client, name in ((doomed, "doomed"), (twin, "twin"), (other, "other")):
                await client.join(ROOM, name)
            live = await in_thread(partial(admin.zcard, "rc:nodes"))
            assert live == 3, f"the twins share one heartbeat entry: {live} live nodes"
            acked = await send_acked(twin, "before-twin") + await send_acked(other, "before-other")

            cluster.nodes[0].process.signal(signal.SIGKILL)
            for survivor in (twin, other):
                await survivor.recv_type("user_left", timeout=20, room=ROOM, username="doomed")
            acked += await send_acked(twin, "after-twin") + await send_acked(other, "after-other")
            await other.send(type="message", room=ROOM, text="mark", id="mark")

            for survivor in (twin, other):
                events = await survivor.events_until_message("mark")
                left = [e["username"] for e in events if e["type"] == "user_left"]
                assert left == [], f"{survivor.node}: told {left} left"
                offsets = [int(e["offset"]) for e in events if e["type"] == "message"]
                # Every message of the room so far, once and in order (the mark last).
                assert offsets == list(range(1, len(offsets) + 1)), offsets
                assert set(acked) <= set(offsets)
                await survivor.send(type="presence", room=ROOM)
                answer: Event = await survivor.recv_type("presence", room=ROOM)
                names = sorted(m["username"] for m in answer["members"])
                assert names == ["other", "twin"], answer
            live = await in_thread(partial(admin.zcard, "rc:nodes"))
            assert live == 2, f"{live} live nodes after one twin's death"
            print(
                f"\ntwo nodes named {twin_id!r}, one SIGKILLed: {len(acked)} acknowledged "
                "messages reached both survivors once and in order; no survivor announced as "
                "left; presence exact"
            )
        finally:
            for client in (doomed, twin, other):
                await client.close()
            admin.close()
