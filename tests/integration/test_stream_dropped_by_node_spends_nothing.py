"""An event stream the node ends spends nothing of its client's join/leave budget (red team
15: a stream its client closes spends one token, as a WebSocket leave does). A stream the node
dropped as a slow consumer (it did not read what the room sent within the lag timeout) spent
one all the same: with a budget of one, its client's EventSource reconnecting was refused 429
for 100 s. Real node, real Redis."""

from __future__ import annotations

from functools import partial

import pytest
from roomcast_dev.devcluster import LocalCluster, NodeProcess

from tests.support.cluster import FAST_ENV, http_get, metric_value, ready, until
from tests.support.httpclient import EventStream
from tests.support.wsclient import Client

pytestmark = pytest.mark.integration

READER = {"X-Forwarded-For": "10.0.0.5"}  # the stream's client (loopback is a trusted proxy)
ENV = dict(
    FAST_ENV,
    # One stream open per 100 s for a client that spent its token.
    ROOMCAST_CLIENT_JOIN_RATE_BURST="1",
    ROOMCAST_CLIENT_JOIN_RATE_PER_SECOND="0.01",
    # A stream that does not read is soon a slow consumer.
    ROOMCAST_SEND_BUFFER_BYTES="4096",
    ROOMCAST_LAG_TIMEOUT="0.5",
    ROOMCAST_CLIENT_MESSAGE_RATE_PER_SECOND="100000",
    ROOMCAST_CLIENT_MESSAGE_RATE_BURST="100000",
    ROOMCAST_ROOM_MESSAGE_RATE_PER_SECOND="100000",
    ROOMCAST_ROOM_MESSAGE_RATE_BURST="100000",
)


def metric(node: NodeProcess, name: str) -> float:
    return metric_value(http_get(f"{node.metrics_url}/metrics")[1], name)


async def test_a_stream_dropped_as_a_slow_consumer_spends_nothing_of_its_clients_budget() -> None:
    with LocalCluster(1, nginx=False, node_env=ENV) as cluster:
        node = cluster.nodes[0]
        await until(partial(ready, node), 20, f"{node.node_id} ready")
        room = "slow-stream"
        url = f"http://127.0.0.1:{node.port}/api/rooms/{room}/events"
        stream = await EventStream.open(url, READER)
        assert stream.status == 200
        await stream.next_type("joined")
        # The stream is read no more; a writer fills it until the node drops it.
        writer = await Client.connect(node.url, additional_headers={"X-Forwarded-For": "10.0.0.6"})
        await writer.join(room, "writer")

        def drops() -> float:
            return metric(node, "roomcast_slow_consumer_drops_total")

        text = "x" * 3000
        for index in range(4000):
            await writer.send(type="message", room=room, text=f"{index} {text}")
            if index % 100 == 99 and drops() >= 1:
                break
        await until(lambda: drops() >= 1, 10, "the node to drop the slow stream")
        stream.close()
        again = await EventStream.open(url, READER)
        assert again.status == 200, again.status
        # The budget is one: a stream its client closes spends it, and the next is refused.
        again.close()
        await until(lambda: metric(node, "roomcast_event_streams_open") == 0, 10, "the close")
        refused = await EventStream.open(url, READER)
        assert refused.status == 429, refused.status
        refused.close()
        await writer.close()
