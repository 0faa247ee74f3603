"""The node's bound on a handshake's head against what nginx forwards.

Red team 17 bounded a WebSocket handshake's head at the node to what nginx's default
``large_client_header_buffers`` (4 x 8 KiB) was taken to forward. nginx reads a head into its
1 KiB ``client_header_buffer_size`` buffer first, keeps the lines completed there, and only then
takes the four large buffers: it forwarded client heads of up to 33,770 bytes (and adds its own
X-Forwarded-* lines), which a node bounding heads at 32 KiB answered 431. The bound is now
34 KiB, above anything nginx forwards; one byte more than nginx takes is nginx's 400, as before.
"""

from __future__ import annotations

from typing import Any

from tests.adversarial.test_redteam17_handshake_heads import status_of

SOURCE = "127.0.5.20"

START = (
    b"GET /chat HTTP/1.1\r\nHost: roomcast\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"Origin: http://roomcast\r\n"
)


def head_filling_nginx(line: int) -> bytes:
    """Lines filling nginx's first 1 KiB buffer, then four header lines of ``line`` bytes of
    value, one in each of its 8 KiB buffers."""
    first = b"X-First: " + b"f" * (850 - 11) + b"\r\n"
    big = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * line) for i in range(4))
    return START + first + big + b"\r\n"


async def test_the_largest_head_nginx_forwards_is_accepted(cluster: Any) -> None:
    head = head_filling_nginx(8175)
    status = await status_of(cluster.nginx_port, SOURCE, head)
    assert status == b"101", (len(head), status)
    assert len(head) > 32 * 1024  # past red team 17's bound


async def test_a_head_nginx_does_not_take_is_still_nginx_s_400(cluster: Any) -> None:
    head = head_filling_nginx(8180)
    status = await status_of(cluster.nginx_port, SOURCE, head)
    assert status == b"400", (len(head), status)
