"""An event stream (SSE) resuming more than a page while Redis restarts empty.

docs/http-api.md: a stream opened with ``Last-Event-ID`` gets the messages it missed from
history, "without gap or duplicate (or ``recovered: false`` ...)". More than a page missed is
sent a page at a time as the client drains (``core/streams.py``, ``_catch_up``); meanwhile the
stream gets no live room events (what it misses is in history). Redis restarts empty during
that time: every member and every live stream gets ``loss`` ``epoch_changed``, the room goes on
in a new epoch from offset 1. The catching stream misses the notice with the rest of the live
traffic, so it must be told otherwise (its stream ends, and its EventSource's resume with the
old ``Last-Event-ID`` is answered ``recovered: false``, ``epoch_changed``), never switched to the
new epoch's live messages as if they followed its old offsets.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from roomcast_dev.devcluster import LocalCluster, NodeProcess

from tests.adversarial.httpraw import EventStreamReader, request_bytes
from tests.adversarial.rawws import open_socket
from tests.support.cluster import QUICK_ENV, http_get, metric_value, ready, until
from tests.support.delivery import Fault, Member, in_thread, join_member
from tests.support.wsclient import scaled

pytestmark = pytest.mark.integration

TEXT_BYTES = 1000
# Messages each stream missed, from a little over one page (64 KiB of history at the default
# send bound) to a few pages: for some of them the last page is the one its socket backs up on,
# the moment the stream has read everything it was behind and waits to drain before going live.
MISSED = (70, 90, 110, 118, 126, 140, 160, 180)
ENV = dict(QUICK_ENV, ROOMCAST_LAG_TIMEOUT="60", ROOMCAST_HISTORY_SIZE="1000")
Event = dict[str, Any]


async def send_acked(sender: Member, serial: list[int], count: int, text: str) -> list[Any]:
    """``count`` messages, each answered: the (epoch, offset) of those acknowledged."""
    ids = []
    for _ in range(count):
        serial[0] += 1
        ids.append(f"m{serial[0]}")
        await sender.send_message(ids[-1], f"{serial[0]} {text}")

    def answered() -> bool:
        return all(i in sender.acked or i in sender.refused | sender.unconfirmed for i in ids)

    async with asyncio.timeout(scaled(20)):
        while not answered():
            sender.changed.clear()
            if answered():
                break
            await sender.changed.wait()
    return [sender.acked[i] for i in ids if i in sender.acked]


def buffered(metrics_url: str) -> float:
    return metric_value(http_get(f"{metrics_url}/metrics")[1], "roomcast_send_buffered_bytes")


async def paused_stream(port: int, room: str, last_event_id: str) -> EventStreamReader:
    """A resume from ``last_event_id`` whose reader takes little and then reads nothing."""
    reader, writer = await open_socket("127.0.0.1", port, rcvbuf=4096)
    headers = [("Accept", "text/event-stream"), ("Last-Event-ID", last_event_id)]
    writer.write(
        request_bytes("GET", f"/api/rooms/{room}/events", f"127.0.0.1:{port}", headers, close=False)
    )
    writer.transport.pause_reading()  # type: ignore[attr-defined]
    return EventStreamReader(reader, writer, 200)


async def read_out(stream: EventStreamReader, new_epoch: str, last_new: int) -> list[Event]:
    """Everything until the stream ends, tells of a loss, or delivers ``last_new``."""
    got: list[Event] = []
    try:
        while True:
            event = await stream.next_event(timeout=20)
            got.append(event)
            if event.get("type") == "loss":
                break
            if event.get("epoch") == new_epoch and event.get("offset", 0) >= last_new:
                break
    except EOFError:
        pass
    return got


async def test_a_stream_catching_up_is_told_when_redis_restarts_empty() -> None:
    with LocalCluster(1, nginx=False, node_env=ENV) as cluster:

        async def restart_empty() -> None:
            await in_thread(cluster.kill_redis)
            await in_thread(cluster.start_redis)

        await streams_catching_up_across(cluster.nodes[0], restart_empty)


def any_room(missed: int) -> str:
    return f"sse-catch-{missed}-{uuid.uuid4().hex[:6]}"


async def streams_catching_up_across(
    node: NodeProcess, fault: Fault, room_name: Callable[[int], str] = any_room
) -> None:
    """Streams paused mid-catch-up in rooms named by ``room_name`` while ``fault`` makes
    their rooms start a new epoch: each is told (its stream ends, its resume is answered
    ``recovered: false``) or gets the new epoch after a ``loss``, never silently."""
    padding = "x" * TEXT_BYTES
    senders: dict[str, Member] = {}
    streams: dict[str, EventStreamReader] = {}
    resume: dict[str, str] = {}
    serial = [0]
    try:
        for missed in MISSED:
            room = room_name(missed)
            senders[room] = sender = await join_member(node.url, room, "sender")
            (epoch, first), *_ = await send_acked(sender, serial, 1, "resume point")
            resume[room] = f"{epoch}:{first}"
            acked = await send_acked(sender, serial, missed, padding)
            assert len(acked) == missed
        for room, last_event_id in resume.items():
            streams[room] = await paused_stream(node.port, room, last_event_id)
        # Some streams' sockets backed up on a page of their catch-up.
        await until(lambda: buffered(node.metrics_url) > 0, 20, "a stream backed up")
        await fault()
        await until(partial(ready, node), 20, "node ready")
        new: dict[str, list[Any]] = {}
        for room, sender in senders.items():
            new[room] = []
            async with asyncio.timeout(scaled(30)):
                while not new[room]:  # the first ones may be refused while Redis returns
                    new[room] = await send_acked(sender, serial, 3, "new")
        # The streams read again, and the rooms go on.
        for stream in streams.values():
            stream.writer.transport.resume_reading()  # type: ignore[attr-defined]
        silent: list[str] = []
        # Streams that read all they were behind before the restart was noticed: the case
        # this probes (the others were live, or still behind, and are told either way).
        read_all_then_told: list[str] = []
        figures = []
        for missed, (room, stream) in zip(MISSED, streams.items(), strict=True):
            new_epoch = new[room][-1][0]
            # It reads what it was behind (up to its old epoch's last offset), or its end.
            got: list[Event] = []
            while not stream.ended:
                try:
                    event = await stream.next_event(timeout=20)
                except EOFError:
                    break
                got.append(event)
                if event.get("type") == "loss" or event.get("offset") == missed + 1:
                    break
            # Then the room goes on.
            more = await send_acked(senders[room], serial, 3, "after")
            if not stream.ended:
                got += await read_out(stream, new_epoch, more[-1][1])
            losses = [e for e in got if e.get("type") == "loss"]
            new_got = [
                e["offset"]
                for e in got
                if e.get("type") == "message" and e.get("epoch") == new_epoch
            ]
            figures.append(
                f"missed {missed}: ended {stream.ended}, {len(losses)} loss, new-epoch "
                f"offsets {new_got} (acked {[o for _, o in new[room] + more]})"
            )
            if new_got and not losses:
                silent.append(room)
            old_epoch = resume[room].split(":")[0]
            read_all = any(
                e.get("epoch") == old_epoch and e.get("offset") == missed + 1 for e in got
            )
            if read_all and stream.ended:
                read_all_then_told.append(room)
            if stream.ended:
                # EventSource resumes from its last id: told epoch_changed.
                again = await EventStreamReader.open(
                    node.port,
                    f"/api/rooms/{room}/events",
                    headers=[("Last-Event-ID", stream.last_event_id or resume[room])],
                )
                opening = await again.next_event()
                again.close()
                assert opening.get("recovered") is False, opening
        print("\n" + "\n".join(figures))
        assert not silent, "\n".join(figures)
        assert read_all_then_told, "no stream was caught between its last page and going live"
    finally:
        for stream in streams.values():
            stream.close()
        for sender in senders.values():
            await sender.ws.close()
