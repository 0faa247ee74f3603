"""Attack 3: large messages as a weapon. One legal burst (20 messages of 60 KB, the default burst
at the default frame limit) into a room; then ten connections bursting 12 MB in total.

Defended: the slow-consumer bound applies to a reader that does not read, never to one that does:
catch-ups and history are paged or streamed, so the page's join + history, a rejoin with `since`
and an SSE resume all get every message, and members that read on every node stay connected."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from tests.adversarial.bursts import DEFAULT_MESSAGE_BURST, burst, join
from tests.adversarial.bystander import BystanderProbe
from tests.adversarial.devcluster_shim import scaled
from tests.adversarial.httpraw import EventStreamReader
from tests.adversarial.rawws import RawWebSocket
from tests.adversarial.room_member import RoomMember

# The second figure: ten connections, 12 MB in total.
BURSTERS = 10


async def test_readers_that_read_get_a_burst_of_large_messages(cluster: Any) -> None:
    room = f"heavy-{uuid.uuid4().hex[:8]}"
    sender = await RawWebSocket.connect("127.0.0.1", cluster.nginx_port)
    joined = await join(sender, room, "sender")
    since = {"epoch": joined["epoch"], "offset": joined["offset"]}
    outcome = await burst(sender, room)
    await sender.close()
    assert outcome.acked == DEFAULT_MESSAGE_BURST, f"a legal burst was refused: {outcome}"

    # The page: join, then history (what loadbalancer/static/app.js does on arrival).
    page = await RawWebSocket.connect("127.0.0.1", cluster.nginx_port)
    try:
        await join(page, room, "page")
        await page.send({"type": "history", "room": room, "limit": 50, "id": "h"})
        try:
            history = await page.next_text(id="h", timeout=20)
        except ConnectionError:
            raise AssertionError(
                f"the page's join + history was closed {page.received.close_code} "
                f"after a legal burst of {DEFAULT_MESSAGE_BURST} x 60 KB"
            ) from None
        got = len(history.get("messages", []))
        assert history["type"] == "history" and got == DEFAULT_MESSAGE_BURST, (
            f"page's history: {history.get('type')} {history.get('code')} with {got} messages, "
            f"closed {page.received.close_code}"
        )
    finally:
        await page.close()

    # A client coming back: rejoin with since = before the burst.
    back = await RawWebSocket.connect("127.0.0.1", cluster.nginx_port)
    try:
        await back.send({"type": "join", "room": room, "username": "back", "since": since})
        rejoined = await back.next_text(type="joined", room=room, timeout=20)
        assert rejoined.get("recovered") is True, rejoined
        async with asyncio.timeout(scaled(20)):
            while sum(1 for e in back.received.texts if e.get("type") == "message") < 20:
                assert not back.received.ended.is_set(), (
                    f"rejoin with since closed {back.received.close_code}"
                )
                back.received.arrived.clear()
                await back.received.arrived.wait()
    finally:
        await back.close()

    # An event stream resuming from before the burst.
    stream = await EventStreamReader.open(
        cluster.nginx_port,
        f"/api/rooms/{room}/events?since={since['offset']}&epoch={since['epoch']}",
    )
    try:
        assert stream.status == 200
        first = await stream.next_event()
        assert first.get("recovered") is True, first
        for _ in range(DEFAULT_MESSAGE_BURST):
            try:
                event = await stream.next_event(timeout=20)
            except EOFError:
                raise AssertionError(
                    f"SSE resume cut after {len(stream.events) - 1} of {DEFAULT_MESSAGE_BURST}"
                ) from None
            assert event["type"] == "message", event
    finally:
        stream.close()


async def test_members_that_read_survive_ten_bursting_connections(
    cluster: Any, probe: BystanderProbe
) -> None:
    room = f"storm-{uuid.uuid4().hex[:8]}"
    # One reading member per node, each its own process: the attack below runs at idle priority
    # (the probe's), and members read by this process fell behind with it on a loaded machine.
    members: list[RoomMember] = []
    bursters: list[RawWebSocket] = []
    try:
        for node in cluster.nodes:
            members.append(RoomMember(node.port, room, f"member-{node.node_id}"))
        for _ in range(BURSTERS):
            bursters.append(await RawWebSocket.connect("127.0.0.1", cluster.nginx_port))
        for index, ws in enumerate(bursters):
            await join(ws, room, f"burster{index}")
        with probe.on(cluster.nodes[0]) as bystander:
            outcomes = await asyncio.gather(*(burst(ws, room) for ws in bursters))
        published = sum(o.acked for o in outcomes)
        reports = await asyncio.gather(
            *(asyncio.to_thread(member.finish, published) for member in members)
        )
        print(
            f"{BURSTERS} connections bursting: {published} x 60 KB published, members read "
            f"{[report.messages for report in reports]};",
            bystander[0].describe(),
        )
        for report in reports:
            assert report.messages >= published, (
                f"a reading member was closed {report.close_code} after {report.messages} "
                f"of {published} messages ({published * 60_000 / 1e6:.1f} MB published)"
                + (f"; the member failed: {report.error}" if report.error else "")
            )
        BystanderProbe.assert_fast(bystander, "ten connections bursting 12 MB")
    finally:
        for ws in bursters:
            await ws.close()
        for member in members:
            member.kill()
