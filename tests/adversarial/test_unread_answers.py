"""Attack 2: unread HTTP answers pin memory. A room holds large messages; 40 clients ask for its
history (or follow its event stream) with a tiny receive buffer and never read.

Defended: every outgoing path shares one bound on what a reader that does not read may pin
(ROOMCAST_SEND_BUFFER_BYTES, 1 MiB by default), so the node's RSS grows by at most that per
reader, the kernel's TCP memory stays bounded even through nginx, and a bystander keeps its
round trip."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.adversarial.bursts import burst, join
from tests.adversarial.bystander import BystanderProbe
from tests.adversarial.httpraw import unread_request
from tests.adversarial.observe import MIB, kernel_tcp_bytes, rss_bytes
from tests.adversarial.rawws import RawWebSocket

# The attack: 40 readers that never read.
UNREAD_READERS = 40
# Seeding: five connections, each within the default burst (20 x 60 KB): the default 100-message
# history, 6 MB, so 40 answers could pin 240 MB.
SEEDERS = 5
# Event streams: two writers' legal bursts (2.4 MB) reach each of the 40 streams: 96 MB in all.
STREAM_WRITERS = 2
# The documented per-reader bound (ROOMCAST_SEND_BUFFER_BYTES default, shared by every outgoing
# path, kernel send buffer included) ...
PER_READER_BOUND_MIB = 1
# ... plus what buffers, parsers and allocator slack may honestly add for 40 sockets.
RSS_SLACK_MIB = 16
# The kernel's TCP memory pinned by 40 stalled answers through nginx, after the node and nginx
# had 5 s to give up on them. Before: ~845 MB for a minute. 64 MiB is what 40 sockets with
# default-sized (not autotuned-to-max) buffers hold.
KERNEL_TCP_GROWTH_MIB = 64
SETTLE_S = 5.0


def sender_address(index: int) -> list[tuple[str, str]]:
    """Each legal sender as its own user (nginx's hop, which the node believes from loopback):
    from one address together they would meet the per-address limits, and the room would not
    fill up."""
    return [("X-Forwarded-For", f"198.51.100.{index + 1}")]


async def seeded_room(port: int) -> str:
    room = f"hoard-{uuid.uuid4().hex[:8]}"
    for index in range(SEEDERS):
        seeder = await RawWebSocket.connect("127.0.0.1", port, headers=sender_address(index))
        try:
            await join(seeder, room, f"seeder{index}")
            await burst(seeder, room)
        finally:
            await seeder.close()
    return room


@pytest.mark.parametrize("what", ["history", "events"])
async def test_unread_answers_on_one_node_pin_at_most_the_bound(
    cluster: Any, probe: BystanderProbe, what: str
) -> None:
    node = cluster.nodes[0]
    room = await seeded_room(node.port)
    readers = []
    with probe.on(node) as bystander:
        before = rss_bytes(node.process.pid)
        kernel_before = kernel_tcp_bytes()
        for _ in range(UNREAD_READERS):
            readers.append(await unread_request(node.port, f"/api/rooms/{room}/{what}"))
        if what == "events":  # the streams are open: now the room's traffic piles up in them
            for index in range(STREAM_WRITERS):
                writer = await RawWebSocket.connect(
                    "127.0.0.1", node.port, headers=sender_address(SEEDERS + index)
                )
                await join(writer, room, f"writer{index}")
                await burst(writer, room)
                await writer.close()
        await asyncio.sleep(SETTLE_S)
        rss_growth = (rss_bytes(node.process.pid) - before) / MIB
        kernel_growth = (kernel_tcp_bytes() - kernel_before) / MIB
    for _, stream in readers:
        stream.close()
    # Pinned by the node = its RSS plus the socket buffers it filled in the kernel (an answer
    # written at once lands in the send buffer, which loopback autotunes up to 4 MiB per socket).
    pinned = rss_growth + kernel_growth
    bound = UNREAD_READERS * PER_READER_BOUND_MIB + RSS_SLACK_MIB
    figures = (
        f"{UNREAD_READERS} unread {what} answers: node RSS {rss_growth:+.1f} MiB, kernel TCP "
        f"{kernel_growth:+.1f} MiB, pinned {pinned:+.1f} MiB (bound {bound})"
    )
    print(figures)
    if bystander:
        print(f"bystander: {bystander[0].describe()}")
    assert node.process.alive(), figures
    assert pinned < bound, figures
    BystanderProbe.assert_fast(bystander, f"unread {what}")


async def test_unread_history_through_nginx_does_not_pin_kernel_memory(cluster: Any) -> None:
    room = await seeded_room(cluster.nginx_port)
    before = kernel_tcp_bytes()
    readers = [
        await unread_request(cluster.nginx_port, f"/api/rooms/{room}/history")
        for _ in range(UNREAD_READERS)
    ]
    await asyncio.sleep(1.0)
    peak = (kernel_tcp_bytes() - before) / MIB
    await asyncio.sleep(SETTLE_S)
    growth = (kernel_tcp_bytes() - before) / MIB
    for _, stream in readers:
        stream.close()
    figures = (
        f"{UNREAD_READERS} unread history answers through nginx: kernel TCP memory "
        f"{peak:+.1f} MiB after 1 s, {growth:+.1f} MiB after {1 + SETTLE_S:.0f} s"
    )
    print(figures)
    assert growth < KERNEL_TCP_GROWTH_MIB, figures
