"""A client's close on a REAL node: the node echoes the close frame and closes the TCP connection
itself (RFC 6455 7.1.1: the server closes it first), and the client's rooms are left then.

The node used to half-close and wait for the client's end of the stream (up to the close
timeout) before it left the rooms: a client that closed its WebSocket but kept the socket open
stayed in the room's presence, and its ``user_left`` came only when the close timer aborted it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from roomcast_dev.devcluster import LocalCluster, NodeProcess

from tests.support.cluster import FAST_ENV
from tests.support.rawws import CLOSE_ECHO, CLOSE_FRAME, open_member
from tests.support.wsclient import Client, scaled

pytestmark = pytest.mark.integration

# The node's wait for a client's end of the stream after a close: the longest it may be, so
# that a leave that waited for it fails the test's much shorter waits.
CLOSE_TIMEOUT = 600


@pytest.fixture(scope="module")
def node() -> Iterator[NodeProcess]:
    env = {**FAST_ENV, "ROOMCAST_CLOSE_TIMEOUT": str(CLOSE_TIMEOUT)}
    with LocalCluster(1, nginx=False, node_env=env) as cluster:
        yield cluster.nodes[0]


async def test_a_closing_client_leaves_its_room_before_it_ends_its_stream(
    node: NodeProcess,
) -> None:
    room = "close-" + uuid.uuid4().hex[:10]
    anchor = await Client.connect(node.url)
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        await anchor.join(room, "anchor")
        await open_member(reader, writer, room, "closer")
        await anchor.recv_type("user_joined", username="closer")

        writer.write(CLOSE_FRAME)  # and the client's side of the stream stays open
        async with asyncio.timeout(scaled(10)):
            rest = await reader.read()  # up to the node's end of the stream
        assert rest.endswith(CLOSE_ECHO), rest
        # The room hears of it now, not after the close timeout (600 s).
        left = await anchor.recv_type("user_left", timeout=10)
        assert left["username"] == "closer"
        presence = await _presence(anchor, room)
        assert presence == ["anchor"]
    finally:
        writer.close()
        await anchor.close()


async def _presence(client: Client, room: str) -> list[str]:
    await client.send(type="presence", room=room)
    event = await client.recv_type("presence", room=room)
    return sorted(member["username"] for member in event["members"])
