"""A member that lags (it reads slower than the room talks: a phone on a bad network, or a
rejoin with ``since`` that missed more than a page) while Redis restarts empty.

A lagging member gets no room traffic until its socket drains; then the node reads what it
missed from history, by offset (docs/guarantees.md, "Slow clients"). Redis restarted empty
meanwhile: the room went on in a new epoch from offset 1, and every member was told with a
``loss`` ``epoch_changed``, except this one, which got no room traffic. The promise
(docs/guarantees.md): an acknowledged message reaches every member, or the member is told.
So the lagging member must be told too: a ``loss`` event, or a 1013 close after which its
client's rejoin with ``since`` answers ``recovered: false``, never the new epoch's messages
after its old offset as if nothing happened.
"""

from __future__ import annotations

import asyncio
import json
import socket
from functools import partial
from typing import Any

import pytest
from roomcast_dev.devcluster import LocalCluster
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.cluster import QUICK_ENV, http_get, metric_value, ready, until
from tests.support.delivery import Member, in_thread, join_member
from tests.support.wsclient import scaled

pytestmark = pytest.mark.integration

ROOM = "slowpoke"
BATCH = 20
TEXT_BYTES = 1000
# A small send bound (above the transport's 64 KiB high-water mark) so that a reader that stops
# reading lags after a few hundred messages, and a long lag timeout so that it is not closed
# for not reading while Redis restarts.
ENV = dict(
    QUICK_ENV,
    ROOMCAST_SEND_BUFFER_BYTES="131072",
    ROOMCAST_LAG_TIMEOUT="60",
    ROOMCAST_HISTORY_SIZE="5000",
)
Event = dict[str, Any]


async def slow_reader(port: int) -> ClientConnection:
    """A member whose socket takes little: SO_RCVBUF shrunk before connecting."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    ws = await connect(f"ws://127.0.0.1:{port}/chat", sock=sock, max_size=2**22, max_queue=None)
    assert json.loads(await ws.recv())["type"] == "welcome"
    await ws.send(json.dumps({"type": "join", "room": ROOM, "username": "slow"}))
    async with asyncio.timeout(scaled(10)):
        while json.loads(await ws.recv())["type"] != "joined":
            pass
    return ws


def lagged(metrics_url: str) -> float:
    text = http_get(f"{metrics_url}/metrics")[1]
    return metric_value(text, "roomcast_lags_total", {"outcome": "lagged"})


async def send_acked(sender: Member, serial: list[int], text: str) -> list[tuple[str, int]]:
    """A batch of messages, each answered: the (epoch, offset) of those acknowledged (a
    message sent while Redis comes back is refused)."""
    ids = []
    for _ in range(BATCH):
        serial[0] += 1
        ids.append(f"m{serial[0]}")
        await sender.send_message(ids[-1], f"{serial[0]} {text}")

    def answered() -> bool:
        return all(i in sender.acked or i in sender.refused | sender.unconfirmed for i in ids)

    async with asyncio.timeout(scaled(10)):
        while not answered():
            sender.changed.clear()
            if answered():
                break
            await sender.changed.wait()
    return sorted(sender.acked[i] for i in ids if i in sender.acked)


async def test_a_lagging_member_is_told_when_redis_restarts_empty() -> None:
    with LocalCluster(2, nginx=False, node_env=ENV) as cluster:
        slow_node, other = cluster.nodes
        sender = await join_member(other.url, ROOM, "sender")
        reader = await slow_reader(slow_node.port)
        serial = [0]
        try:
            first = (await send_acked(sender, serial, "hello"))[0]
            async with asyncio.timeout(scaled(10)):
                while json.loads(await reader.recv()).get("type") != "message":
                    pass
            old_epoch = first[0]
            reader.transport.pause_reading()  # it stops reading: the node's socket backs up
            padding = "x" * TEXT_BYTES
            acked_old: list[int] = []
            while await in_thread(partial(lagged, slow_node.metrics_url)) < 1:
                acked_old += [offset for _, offset in await send_acked(sender, serial, padding)]
                assert len(acked_old) < 1500, "the reader never lagged"
            # Redis restarts empty (no persistence): the room's epoch changes.
            await in_thread(cluster.kill_redis)
            await in_thread(cluster.start_redis)
            for node in cluster.nodes:
                await until(partial(ready, node), 20, f"{node.node_id} ready")
            # The room goes on in its new epoch past the offset the lagging member had.
            acked_new: list[tuple[str, int]] = []
            async with asyncio.timeout(scaled(30)):
                while not acked_new or acked_new[-1][1] <= acked_old[-1] + 5:
                    acked_new += await send_acked(sender, serial, "new")
            new_epoch = acked_new[-1][0]
            assert new_epoch != old_epoch
            # It reads again: what is it told?
            reader.transport.resume_reading()
            got: list[Event] = []
            closed = None
            try:
                async with asyncio.timeout(scaled(20)):
                    while True:
                        event = json.loads(await reader.recv())
                        got.append(event)
                        if (
                            event.get("type") == "message"
                            and event["epoch"] == new_epoch
                            and event["offset"] >= acked_new[-1][1]
                        ):
                            break
            except ConnectionClosed as exc:
                closed = exc.rcvd.code if exc.rcvd is not None else None
            losses = [e for e in got if e.get("type") == "loss"]
            old_got = [
                e["offset"] for e in got if e.get("type") == "message" and e["epoch"] == old_epoch
            ]
            new_got = [
                e["offset"] for e in got if e.get("type") == "message" and e["epoch"] == new_epoch
            ]
            print(
                f"\nlagging member across a Redis restart: {len(acked_old)} acked in the old "
                f"epoch (up to {acked_old[-1]}), {len(acked_new)} in the new; it then got "
                f"{len(old_got)} old ({min(old_got, default=None)}..{max(old_got, default=None)}), "
                f"{len(new_got)} new ({min(new_got, default=None)}..{max(new_got, default=None)}), "
                f"{len(losses)} loss events, closed {closed}"
            )
            told = closed == 1013 or any(
                e["reason"] == "epoch_changed" and e["epoch"] == old_epoch for e in losses
            )
            assert told, f"never told: new epoch's offsets {new_got[:3]}... as if nothing happened"
            if closed == 1013:
                # Its client rejoins with ``since``: recovered false, epoch_changed.
                since = {"epoch": old_epoch, "offset": max(old_got, default=acked_old[0] - 1)}
                ws = await connect(slow_node.url, max_size=2**22)
                try:
                    assert json.loads(await ws.recv())["type"] == "welcome"
                    await ws.send(
                        json.dumps(
                            {"type": "join", "room": ROOM, "username": "slow", "since": since}
                        )
                    )
                    async with asyncio.timeout(scaled(10)):
                        while (joined := json.loads(await ws.recv()))["type"] != "joined":
                            pass
                    assert joined["recovered"] is False and joined["reason"] == "epoch_changed"
                finally:
                    await ws.close()
        finally:
            await sender.ws.close()
            await reader.close()


async def test_a_lagging_reader_under_a_small_send_bound_is_caught_up_once_it_reads() -> None:
    """``ROOMCAST_SEND_BUFFER_BYTES`` below the transport's 64 KiB high-water mark (it may be
    set down to 4 KiB): a member over it lags, and once it reads again it must get what it
    missed from history, not wait for ``ROOMCAST_LAG_TIMEOUT`` and a 1013."""
    env = dict(ENV, ROOMCAST_SEND_BUFFER_BYTES="8192")
    with LocalCluster(1, nginx=False, node_env=env) as cluster:
        node = cluster.nodes[0]
        sender = await join_member(node.url, ROOM, "sender")
        reader = await slow_reader(node.port)
        serial = [0]
        try:
            reader.transport.pause_reading()
            padding = "x" * TEXT_BYTES
            acked: list[int] = []
            while await in_thread(partial(lagged, node.metrics_url)) < 1:
                acked += [offset for _, offset in await send_acked(sender, serial, padding)]
                assert len(acked) < 1500, "the reader never lagged"
            acked += [offset for _, offset in await send_acked(sender, serial, "while lagging")]
            reader.transport.resume_reading()
            got: list[int] = []
            closed = None
            try:
                async with asyncio.timeout(scaled(10)):
                    while not got or got[-1] < acked[-1]:
                        event = json.loads(await reader.recv())
                        if event.get("type") == "message":
                            got.append(event["offset"])
            except ConnectionClosed as exc:
                closed = exc.rcvd.code if exc.rcvd is not None else None
            except TimeoutError:
                pass
            print(
                f"\nlagging reader, 8 KiB send bound: {len(acked)} acknowledged (up to "
                f"{acked[-1]}), it got {len(got)} (up to {max(got, default=None)}), closed {closed}"
            )
            assert got == list(range(1, acked[-1] + 1)), f"got up to {max(got, default=None)}"
        finally:
            await sender.ws.close()
            await reader.close()
