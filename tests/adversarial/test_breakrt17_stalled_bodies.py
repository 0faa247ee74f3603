"""A request body that stops coming, through nginx: an error line and a wrong 504 each.

nginx passes API bodies to the node as they come (``proxy_request_buffering off``). A post whose
body never ends (a Content-Length it does not keep, or a chunk announced and never sent) was
closed by the node at ROOMCAST_HANDSHAKE_TIMEOUT without an answer, so nginx wrote an
``error`` line per request ("upstream prematurely closed connection", request line and all,
past red team 17's bound on nginx's log: one address's 16 connections made 16 lines of 2 KB
each in 10 s, and it may hold 256) and answered 504 ``unconfirmed``, "it may or may not have
been published", for a post the node never read. The node now answers 408 ``invalid_request``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from roomcast_dev.devcluster import LocalCluster

from tests.adversarial.devcluster_shim import scaled
from tests.adversarial.httpraw import parse_answer, request_bytes
from tests.adversarial.rawws import open_socket

TIMEOUT_S = 1.0
TARGET = "/api/rooms/stalled/messages?pad=" + "a" * 1900


@pytest.fixture(scope="module")
def stalling() -> Iterator[Any]:
    env = {"ROOMCAST_HANDSHAKE_TIMEOUT": str(TIMEOUT_S)}
    with LocalCluster(1, node_env=env) as running:
        yield running


def stalled_post(framing: list[tuple[str, str]], begun: bytes) -> bytes:
    headers = [("Content-Type", "application/json"), *framing]
    return request_bytes("POST", TARGET, "roomcast", headers) + begun


@pytest.mark.parametrize(
    "request_",
    [
        stalled_post([("Content-Length", "100")], b'{"text":'),
        stalled_post([("Transfer-Encoding", "chunked")], b'8\r\n{"text":\r\n40\r\n'),
    ],
    ids=["content-length", "chunked"],
)
async def test_a_body_that_stops_coming_is_answered_408_unlogged(
    stalling: Any, request_: bytes
) -> None:
    nginx = stalling.nginx
    before = len(nginx.lines)
    reader, writer = await open_socket("127.0.0.1", stalling.nginx_port)
    try:
        writer.write(request_)
        raw = await asyncio.wait_for(reader.read(), scaled(TIMEOUT_S + 10))
    finally:
        writer.close()
    answer = parse_answer(raw)
    lines = nginx.lines[before:]
    assert answer.status == 408, (answer.status, answer.body, lines)
    assert b'"invalid_request"' in answer.body
    assert not lines, lines
