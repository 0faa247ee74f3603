"""The nginx rule answering a seven-digit ``Content-Length`` with 413 before any location.

``Content-Length`` is ``1*DIGIT`` (RFC 9110 section 8.6): leading zeros are legal, and nginx
reads ``0000000012`` as 12 bytes. A pattern of seven digits or more refused such a legal
12-byte post 413 without it reaching a location; the rule now counts the digits after the
leading zeros. Bodies the rule must not touch (empty, ``Expect: 100-continue``, six digits)
are checked alongside.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.adversarial.devcluster_shim import scaled
from tests.adversarial.httpraw import parse_answer, request_bytes
from tests.adversarial.rawws import open_socket

BODY = b'{"text":"hi","username":"alice"}'


async def answer_of(port: int, request: bytes) -> Any:
    reader, writer = await open_socket("127.0.0.1", port)
    try:
        writer.write(request)
        return parse_answer(await asyncio.wait_for(reader.read(), scaled(10)))
    finally:
        writer.close()


def post(room: str, length: str, body: bytes, extra: list[tuple[str, str]] | None = None) -> bytes:
    headers = [("Content-Type", "application/json"), ("Content-Length", length), *(extra or [])]
    return request_bytes("POST", f"/api/rooms/{room}/messages", "roomcast", headers) + body


async def test_a_content_length_with_leading_zeros_is_not_refused(cluster: Any) -> None:
    length = str(len(BODY)).rjust(10, "0")  # "0000000032": 32 bytes
    answer = await answer_of(cluster.nginx_port, post("zeros", length, BODY))
    assert answer.status == 201, (answer.status, answer.body)


async def test_seven_significant_digits_are_still_refused_before_any_location(cluster: Any) -> None:
    for length in ("1000000", "0001000000", "99999999999"):
        answer = await answer_of(cluster.nginx_port, post("big", length, b""))
        assert answer.status == 413, (length, answer.status)
        assert b"frame_too_big" in answer.body


async def test_bodies_the_rule_leaves_alone(cluster: Any) -> None:
    empty = await answer_of(cluster.nginx_port, post("empty", "0", b""))
    assert empty.status == 400, (empty.status, empty.body)  # the node's own answer: not JSON
    assert b"invalid_json" in empty.body
    # nginx answers 100 Continue, reads the body, and the node posts it.
    continued = await answer_of(
        cluster.nginx_port, post("expect", str(len(BODY)), BODY, [("Expect", "100-continue")])
    )
    assert continued.status == 100, (continued.status, continued.body)
    assert continued.body.startswith(b"HTTP/1.1 201 "), continued.body
