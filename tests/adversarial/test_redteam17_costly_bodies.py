"""Red team 17: HTTP API bodies of valid JSON that are costly to parse.

Red team 16 refused WebSocket frames of more than 64 JSON values (over 512 characters) and
charged their client a whole burst of received bytes. An API post's body went through the same
parse uncounted: ``{"text": "x", "username": "u", "pad": [[],[],...]}``, 60 KB of 20,000 empty
arrays in a field the API ignores, was posted (201), each costing the node ~1-1.25 ms more than
a plain 60 KB post. A body is now counted as a frame is, refused 400 ``invalid_frame``, and its
caller's API burst spent, so the rest of the burst is refused 429 before any parse.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.adversarial.devcluster_shim import scaled
from tests.adversarial.httpraw import parse_answer, request_bytes
from tests.adversarial.observe import cpu_seconds, metric_sum, metrics_text
from tests.adversarial.rawws import open_socket

ADDRESSES = 3
POSTS = 40  # an address's API burst
PAD = b"[" + b",".join([b"[]"] * 20_000) + b"]"
# The same arrays under one key written 333 times (60 each): the parsed body holds 4 values.
REPEATED = b"".join([b',"a":[' + b",".join([b"[]"] * 60) + b"]"] * 333) + b',"a":0'
SHAPES = {
    "in-a-field": b'{"text":"x","username":"padder","pad":%s}' % PAD,
    "as-the-body": b"%s%s" % (PAD, b" " * 39),
    "repeated-keys": b'{"text":"x","username":"padder"%s}' % REPEATED,
    # A number under a key written 9,990 times: no container, ~11 ns a byte to parse.
    "repeated-scalar-keys": b'{"text":"x","username":"padder"%s}' % (b',"a":0' * 9_990),
}
SOURCES = {"in-a-field": 40, "as-the-body": 70, "repeated-keys": 100, "repeated-scalar-keys": 130}


def post(room: str, body: bytes) -> bytes:
    return request_bytes(
        "POST",
        f"/api/rooms/{room}/messages",
        "roomcast",
        [("Content-Type", "application/json")],
        body,
    )


async def answer(port: int, request: bytes, source: str) -> Any:
    reader, writer = await open_socket("127.0.0.1", port, source=source)
    try:
        writer.write(request)
        return parse_answer(await asyncio.wait_for(reader.read(), scaled(30)))
    finally:
        writer.close()


async def post_burst(port: int, source: str, room: str, body: bytes) -> dict[int, int]:
    """POSTS posts of ``body`` from ``source``, one after another: status -> count."""
    statuses: dict[int, int] = {}
    for _ in range(POSTS):
        status = (await answer(port, post(room, body), source)).status
        statuses[status] = statuses.get(status, 0) + 1
    return statuses


@pytest.mark.parametrize("shape", list(SHAPES))
async def test_a_body_of_many_empty_arrays_is_refused_and_costs_its_burst(
    cluster: Any, shape: str
) -> None:
    """The arrays in a field the API ignores; the body itself (refused as not an object, but
    only once parsed, ~3.2 ms, and not charged before breakrt17); or under a repeated key (not
    counted before wire.parse_cost: the parsed body held 4 values)."""
    node = cluster.nodes[0]
    base = SOURCES[shape]  # addresses of their own: each parametrization spends bursts
    costly = SHAPES[shape]
    plain = b'{"text":"x","username":"padder","pad":"%s"}' % (b"a" * (len(costly) - 41))
    assert len(costly) < 64 * 1024 and len(plain) == len(costly)
    pid = node.process.pid
    refused_before = metric_sum(metrics_text(node.metrics_url), "roomcast_api_requests_total")

    before = cpu_seconds(pid)
    started = time.monotonic()
    plain_statuses = await post_burst(node.port, f"127.0.0.{base}", f"plain-{base}", plain)
    plain_cpu = cpu_seconds(pid) - before

    before = cpu_seconds(pid)
    costly_statuses: dict[int, int] = {}
    for i in range(ADDRESSES):
        got = await post_burst(node.port, f"127.0.0.{base + 1 + i}", f"padded-{base}-{i}", costly)
        for status, count in got.items():
            costly_statuses[status] = costly_statuses.get(status, 0) + count
    costly_cpu = cpu_seconds(pid) - before
    took = time.monotonic() - started

    first = (await answer(node.port, post("padded-x", costly), f"127.0.0.{base + 10}")).json()
    counted = metric_sum(metrics_text(node.metrics_url), "roomcast_api_requests_total")
    figures = (
        f"{POSTS} plain 60 KB posts: {plain_statuses}, node CPU {plain_cpu:.3f} s; "
        f"{ADDRESSES} addresses x {POSTS} posts ({shape}): "
        f"{costly_statuses}, "
        f"node CPU {costly_cpu:.3f} s ({took:.1f} s in all); a fresh address's first: {first}"
    )
    print(figures)
    assert plain_statuses == {201: POSTS}, figures
    assert first["code"] == "invalid_frame", figures
    # Each address's first costly body is parsed and refused; the rest of its burst is not
    # parsed at all.
    assert costly_statuses == {400: ADDRESSES, 429: ADDRESSES * (POSTS - 1)}, figures
    # On main, 201 each, and three addresses' bursts cost 2-3 times a plain burst's CPU.
    assert costly_cpu < ADDRESSES * plain_cpu, figures
    assert counted - refused_before >= POSTS + ADDRESSES * POSTS + 1, figures


async def test_a_post_with_a_few_unknown_fields_and_code_in_its_text_is_still_sent(
    cluster: Any,
) -> None:
    """Only JSON structure is counted, never what a string holds, and a body of a few extra
    fields (a client's own metadata) is as welcome as before."""
    node = cluster.nodes[0]
    text = "[[], {}, [1, 2], {'a': [3]}], " * 2_000
    body = (
        b'{"text":"%s","username":"coder","client":{"version":[1,2,3],"tags":["a","b"]}}'
        % text.encode()
    )
    got = await answer(node.port, post("code-posts", body), "127.0.0.60")
    assert got.status == 201, got
