"""Red team 19: an API request framed two ways, a second request hidden in its body.

A request with both ``Content-Length`` and ``Transfer-Encoding: chunked`` says two different
things about where its body ends. A proxy that goes by the length forwards the whole as one
request; a server that goes by the chunks takes the rest for a next request on the proxy's
connection, where ``X-Forwarded-For`` is believed (the node trusts loopback by default): the
hidden request runs as from any address its sender wrote. RFC 9112 6.3 has the server close
the connection after answering such a request. The node read the chunks and ran the hidden
post (201 for both); now it answers 400 and closes, running neither. The shipped nginx refuses
each framing here itself (400 or 501), so nothing hidden reaches a node through it either.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

import pytest

from tests.adversarial.devcluster_shim import scaled
from tests.adversarial.httpraw import http
from tests.adversarial.rawws import open_socket

STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) ")
FIRST = json.dumps({"text": "first", "username": "framer"}).encode()
CHUNKED_FIRST = b"%x\r\n" % len(FIRST) + FIRST + b"\r\n0\r\n\r\n"


def hidden_post(room: str, text: str) -> bytes:
    """The request behind the body: a post from an address of its sender's choosing."""
    body = json.dumps({"text": text, "username": "hidden"}).encode()
    return (
        f"POST /api/rooms/{room}/messages HTTP/1.1\r\nHost: roomcast\r\n"
        f"X-Forwarded-For: 203.0.113.9\r\nContent-Type: application/json\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def post_head(room: str, framing: str) -> bytes:
    return (
        f"POST /api/rooms/{room}/messages HTTP/1.1\r\nHost: roomcast\r\n"
        f"Content-Type: application/json\r\n{framing}\r\n"
    ).encode()


# Each: the framing headers, and the body as the chunk reader sees it; the hidden post follows.
FRAMINGS: dict[str, tuple[str, bytes]] = {
    "length then chunked": (
        f"Content-Length: {len(CHUNKED_FIRST)}\r\nTransfer-Encoding: chunked\r\n",
        CHUNKED_FIRST,
    ),
    "chunked then length": (
        f"Transfer-Encoding: chunked\r\nContent-Length: {len(CHUNKED_FIRST)}\r\n",
        CHUNKED_FIRST,
    ),
    "short length, chunked": ("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", CHUNKED_FIRST),
}
# Framings nginx must refuse before any node (the node answers these the same way).
NGINX_ONLY: dict[str, tuple[str, bytes]] = {
    "chunked, identity": (
        f"Transfer-Encoding: chunked, identity\r\nContent-Length: {len(FIRST)}\r\n",
        FIRST,
    ),
    "folded transfer-encoding": (
        f"Transfer-Encoding:\r\n chunked\r\nContent-Length: {len(FIRST)}\r\n",
        FIRST,
    ),
    "two lengths": (f"Content-Length: {len(FIRST)}\r\nContent-Length: 0\r\n", FIRST),
}


async def send_all(port: int, data: bytes) -> bytes:
    """Everything the server answers until it ends the connection."""
    reader, writer = await open_socket("127.0.0.1", port)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.read(), scaled(10))
    finally:
        writer.close()


async def hidden_ran(port: int, room: str, text: str) -> bool:
    history = await http(port, "GET", f"/api/rooms/{room}/history")
    assert history.status == 200, history
    return text.encode() in history.body


async def attack(port: int, framing: str, body: bytes) -> tuple[list[int], bool, str]:
    room = f"framing-{uuid.uuid4().hex[:8]}"
    text = f"hidden-{uuid.uuid4().hex[:8]}"
    answer = await send_all(port, post_head(room, framing) + body + hidden_post(room, text))
    # Answers follow each other with no line end between a body and the next status line.
    statuses = [int(status) for status in STATUS_LINE.findall(answer)]
    ran = await hidden_ran(port, room, text)
    return statuses, ran, answer.split(b"\r\n\r\n", 1)[-1].decode(errors="replace")


async def test_a_clean_request_and_the_same_second_request_both_run(cluster: Any) -> None:
    """The control: plain pipelining runs the second request, so the check below can see one."""
    port = cluster.nodes[0].port
    statuses, ran, _ = await attack(port, f"Content-Length: {len(FIRST)}\r\n", FIRST)
    assert statuses == [201, 201] and ran, statuses


@pytest.mark.parametrize("case", list(FRAMINGS))
async def test_a_request_framed_two_ways_runs_nothing_at_the_node(cluster: Any, case: str) -> None:
    statuses, ran, body = await attack(cluster.nodes[0].port, *FRAMINGS[case])
    figures = f"{case}, straight to a node: answers {statuses}, hidden post ran: {ran}; {body}"
    print(figures)
    assert statuses == [400], figures
    assert not ran, figures


@pytest.mark.parametrize("case", list(FRAMINGS | NGINX_ONLY))
async def test_nginx_refuses_every_framing_two_ways(cluster: Any, case: str) -> None:
    statuses, ran, _ = await attack(cluster.nginx_port, *(FRAMINGS | NGINX_ONLY)[case])
    figures = f"{case}, through nginx: answers {statuses}, hidden post ran: {ran}"
    print(figures)
    assert len(statuses) == 1 and statuses[0] in (400, 501), figures
    assert not ran, figures
