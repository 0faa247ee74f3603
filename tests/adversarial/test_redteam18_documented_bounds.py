"""Red team 18: the bounds docs/security.md states, tried at the bound and one past it.

An outsider reads the limits table and sends bound, then bound + 1, against real servers (Redis,
three nodes, nginx, the shipped defaults): the bound itself must pass, one past it must meet the
documented refusal, be counted in the metrics, and leave a bystander on the node unharmed. Each
case runs from a loopback address of its own, so open mode's per-address buckets of one case do
not spend another's.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.adversarial.bursts import join
from tests.adversarial.bystander import BystanderProbe
from tests.adversarial.devcluster_shim import scaled
from tests.adversarial.httpraw import Answer, parse_answer, request_bytes
from tests.adversarial.observe import cpu_seconds, metrics_text
from tests.adversarial.rawws import (
    OP_CONT,
    OP_TEXT,
    HandshakeRefused,
    RawWebSocket,
    frame,
    handshake_request,
    open_socket,
    read_head,
    text,
)

_addresses = itertools.count(1)


def fresh_address() -> str:
    """A loopback address no other case of this module used: a client of its own."""
    return f"127.18.{next(_addresses)}.1"


def sample(metrics: str, name: str, label: str) -> float:
    """The sample of ``name`` whose labels hold ``label`` (0 when there is none yet)."""
    for line in metrics.splitlines():
        if line.startswith(f"{name}{{") and label in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def grew(before: str, after: str, name: str, label: str) -> float:
    """How much the sample of ``name`` holding ``label`` grew between two scrapes."""
    return sample(after, name, label) - sample(before, name, label)


# --- handshakes: the documented counts and lengths, answered 400 one past them -----------------

QUERY_FIELDS = 16
SUBPROTOCOLS = 8
ORIGIN_CHARACTERS = 256


def query_of(fields: int) -> tuple[str, list[tuple[str, str]]]:
    return "/chat?" + "&".join(f"f{i}=x" for i in range(fields)), []


def subprotocols_of(count: int) -> tuple[str, list[tuple[str, str]]]:
    offered = ["roomcast"] + [f"filler{i}" for i in range(count - 1)]
    return "/chat", [("Sec-WebSocket-Protocol", ", ".join(offered))]


def origin_of(length: int) -> tuple[str, list[tuple[str, str]]]:
    scheme = "http://"
    return "/chat", [("Origin", scheme + "a" * (length - len(scheme)))]


HANDSHAKE_BOUNDS: dict[str, tuple[Callable[[int], tuple[str, list[tuple[str, str]]]], int, str]] = {
    "query fields": (query_of, QUERY_FIELDS, "malformed_query"),
    "offered subprotocols": (subprotocols_of, SUBPROTOCOLS, "malformed_header"),
    "Origin characters": (origin_of, ORIGIN_CHARACTERS, "malformed_header"),
}


@pytest.mark.parametrize("bound", list(HANDSHAKE_BOUNDS))
async def test_a_handshake_at_its_bound_opens_and_one_past_it_is_refused_400(
    cluster: Any, bound: str
) -> None:
    build, limit, code = HANDSHAKE_BOUNDS[bound]
    node = cluster.nodes[0]
    source = fresh_address()
    at_bound = await RawWebSocket.connect("127.0.0.1", node.port, *build(limit), source=source)
    await at_bound.close()
    before = metrics_text(node.metrics_url)
    with pytest.raises(HandshakeRefused) as refused:
        await RawWebSocket.connect("127.0.0.1", node.port, *build(limit + 1), source=source)
    after = metrics_text(node.metrics_url)
    counted = (
        grew(before, after, "roomcast_handshakes_rejected_total", 'status="400"'),
        grew(before, after, "roomcast_auth_failures_total", f'code="{code}"'),
    )
    print(f"{bound}: {limit} opened, {limit + 1} answered {refused.value.status}, {counted}")
    assert refused.value.status == 400, refused.value.head
    assert counted == (1, 1), f"{bound} + 1: answered 400, counted {counted}"


# --- per connection: bound passes, bound + 1 is refused rate_limited and counted ---------------

MESSAGE_BURST = 20  # ROOMCAST_MESSAGE_RATE_BURST
TYPING_BURST = 5  # ROOMCAST_TYPING_RATE_BURST
JOIN_BURST = 20  # ROOMCAST_JOIN_RATE_BURST
ROOMS_PER_CONNECTION = 16  # ROOMCAST_MAX_ROOMS_PER_CONNECTION


async def answers_to(
    ws: RawWebSocket, frames: list[dict[str, Any]], room: str
) -> list[dict[str, Any]]:
    """Sends ``frames`` in one write, then a message into ``room`` whose answer (ack or error)
    marks that every frame without an id was handled (a connection's frames are handled in
    order); a frame with an id is waited for by it (a message's answer comes once Redis ran its
    script, maybe after a later frame's). Returns the errors they and that message got."""
    start = len(ws.received.texts)
    sentinel = f"sentinel-{uuid.uuid4().hex[:8]}"
    ws.send_bytes(b"".join(text(f) for f in frames))
    await ws.send({"type": "message", "room": room, "text": "done", "id": sentinel})
    for key in [*(f["id"] for f in frames if "id" in f), sentinel]:
        await ws.next_text(timeout=20, id=key)
    return [e for e in ws.received.texts[start:] if e.get("type") == "error"]


def messages(count: int) -> list[dict[str, Any]]:
    return [{"type": "message", "text": f"m{i}", "id": f"m{i}"} for i in range(count)]


def typings(count: int) -> list[dict[str, Any]]:
    return [{"type": "typing"} for _ in range(count)]


def joins_within_rooms(count: int) -> list[dict[str, Any]]:
    """``count`` joins that never hold more than 15 rooms (the connection is in one already):
    15 joins, then leave-and-join pairs."""
    tag = uuid.uuid4().hex[:6]
    held = ROOMS_PER_CONNECTION - 1
    frames: list[dict[str, Any]] = []
    for i in range(count):
        if i >= held:
            frames.append({"type": "leave", "room": f"j{tag}-{i - held}"})
        frames.append({"type": "join", "room": f"j{tag}-{i}", "username": "joiner"})
    return frames


def joins_of_rooms(count: int) -> list[dict[str, Any]]:
    tag = uuid.uuid4().hex[:6]
    return [{"type": "join", "room": f"r{tag}-{i}", "username": "joiner"} for i in range(count)]


async def two_clients_in(room: str, node: Any) -> tuple[RawWebSocket, RawWebSocket]:
    """Two members of ``room`` on ``node``, each from an address of its own (a client each)."""
    members = []
    for _ in range(2):
        ws = await RawWebSocket.connect("127.0.0.1", node.port, source=fresh_address())
        members.append(ws)
        await join(ws, room, "tester")
    return members[0], members[1]


# name: (frames of a count, the documented bound, the code one past it gets, the metric's label)
CONNECTION_BOUNDS: dict[str, tuple[Callable[[int], list[dict[str, Any]]], int, str]] = {
    # the sentinel is a message too: one under the burst leaves it its token
    "messages per connection": (messages, MESSAGE_BURST - 1, "rate_limited"),
    "typing per connection": (typings, TYPING_BURST, "rate_limited"),
    "joins per connection": (joins_within_rooms, JOIN_BURST, "rate_limited"),
    "rooms per connection": (joins_of_rooms, ROOMS_PER_CONNECTION, "too_many_rooms"),
}


@pytest.mark.parametrize("bound", list(CONNECTION_BOUNDS))
async def test_a_connection_at_its_bound_passes_and_one_past_it_is_refused(
    cluster: Any, probe: BystanderProbe, bound: str
) -> None:
    build, limit, code = CONNECTION_BOUNDS[bound]
    node = cluster.nodes[0]
    room = f"bounds-{uuid.uuid4().hex[:8]}"
    at_bound, past_bound = await two_clients_in(room, node)
    try:
        leading_joins = 1 if build in (joins_within_rooms, joins_of_rooms) else 0
        # the room joined above counts: one join and one room fewer are left to spend
        count = limit - leading_joins
        passed = await answers_to(at_bound, build(count), room)
        before = metrics_text(node.metrics_url)
        with probe.on(node) as bystander:
            refused = await answers_to(past_bound, build(count + 1), room)
        after = metrics_text(node.metrics_url)
    finally:
        await at_bound.close()
        await past_bound.close()
    counted = grew(before, after, "roomcast_frames_rejected_total", f'code="{code}"')
    figures = (
        f"{bound}: {limit} refused {[e.get('code') for e in passed]}, {limit + 1} refused "
        f"{[e.get('code') for e in refused]} (counted {counted}); {bystander[0].describe()}"
    )
    print(figures)
    assert passed == [], figures
    assert [e.get("code") for e in refused] == [code], figures
    assert counted == 1, figures
    BystanderProbe.assert_fast(bystander, bound)


# --- one message's size: fragments and bytes, closed 1009 one past them ------------------------

MAX_FRAGMENTS = 64  # ROOMCAST_MAX_FRAGMENTS
MAX_MESSAGE_BYTES = 64 * 1024  # ROOMCAST_MAX_FRAME_BYTES


def in_fragments(fragments: int) -> bytes:
    payload = b'{"type":"message","text":"' + b"x" * fragments + b'","id":"frag"}'
    cut = len(payload) // fragments
    pieces = [payload[i * cut : (i + 1) * cut] for i in range(fragments - 1)]
    pieces.append(payload[(fragments - 1) * cut :])
    return b"".join(
        frame(OP_TEXT if i == 0 else OP_CONT, piece, fin=i == fragments - 1)
        for i, piece in enumerate(pieces)
    )


def of_bytes(size: int) -> bytes:
    head, tail = b'{"type":"message","text":"', b'","id":"frag"}'
    return frame(OP_TEXT, head + b"x" * (size - len(head) - len(tail)) + tail)


SIZE_BOUNDS: dict[str, tuple[Callable[[int], bytes], int]] = {
    "fragments per message": (in_fragments, MAX_FRAGMENTS),
    "bytes per message": (of_bytes, MAX_MESSAGE_BYTES),
}


@pytest.mark.parametrize("bound", list(SIZE_BOUNDS))
async def test_a_message_at_its_size_bound_is_handled_and_one_past_it_closes_1009(
    cluster: Any, bound: str
) -> None:
    build, limit = SIZE_BOUNDS[bound]
    node = cluster.nodes[0]
    room = f"sizes-{uuid.uuid4().hex[:8]}"
    # one connection each: the two messages' fragments together would pass the frame burst (100)
    at_bound, past_bound = await two_clients_in(room, node)
    try:
        at_bound.send_bytes(build(limit))
        answer = await at_bound.next_text(timeout=20, id="frag")
        past_bound.send_bytes(build(limit + 1))
        code = await past_bound.wait_closed(timeout=20)
        kept_open = not at_bound.received.ended.is_set()
    finally:
        await at_bound.close()
        await past_bound.close()
    figures = f"{bound}: {limit} answered {answer}, open {kept_open}; {limit + 1} closed {code}"
    print(figures)
    assert answer.get("type") == "ack" and kept_open, figures
    assert code == 1009, figures


# --- many addresses at once, each just under its own bounds: the room's bound still holds -----

ADDRESSES = 20
CONNECTIONS_PER_ADDRESS = 2
CLIENT_MESSAGE_BURST = 40  # ROOMCAST_CLIENT_MESSAGE_RATE_BURST
ROOM_MESSAGE_BURST = 200  # ROOMCAST_ROOM_MESSAGE_RATE_BURST
ROOM_MESSAGE_RATE = 100  # ROOMCAST_ROOM_MESSAGE_RATE_PER_SECOND


async def test_many_addresses_each_under_its_bounds_do_not_pass_the_rooms(
    cluster: Any, probe: BystanderProbe
) -> None:
    """20 addresses, each sending 38 messages at once (under its client burst of 40, 19 on each of
    two connections, under their burst of 20) into one room through nginx: 760 messages, where the
    room takes 200 at once and 100/s. A member receives at most what the room's bucket allows
    during the burst, the rest are refused `rate_limited` and counted, the bystander unharmed."""
    room = f"many-{uuid.uuid4().hex[:8]}"
    member = await RawWebSocket.connect("127.0.0.1", cluster.nodes[0].port)
    await join(member, room, "member")
    senders = [
        await RawWebSocket.connect("127.0.0.1", cluster.nginx_port, source=address)
        for address in (fresh_address() for _ in range(ADDRESSES))
        for _ in range(CONNECTIONS_PER_ADDRESS)
    ]
    each = CLIENT_MESSAGE_BURST // CONNECTIONS_PER_ADDRESS - 1
    try:
        for ws in senders:
            await join(ws, room, "sender")
        before = sum(
            sample(metrics_text(n.metrics_url), "roomcast_frames_rejected_total", "rate_limited")
            for n in cluster.nodes
        )
        loop = asyncio.get_running_loop()
        with probe.on(cluster.nodes[0]) as bystander:
            started = loop.time()
            outcomes = await asyncio.gather(
                *(answers_to(ws, messages(each), room) for ws in senders)
            )
            took = loop.time() - started
        after = sum(
            sample(metrics_text(n.metrics_url), "roomcast_frames_rejected_total", "rate_limited")
            for n in cluster.nodes
        )
        await deliver_marker(cluster, room, member)
        received = sum(1 for e in member.received.texts if e.get("type") == "message") - 1
    finally:
        for ws in senders:
            await ws.close()
        await member.close()
    refused = sum(1 for errors in outcomes for e in errors if e.get("code") == "rate_limited")
    sent = len(senders) * (each + 1)  # each connection's sentinel is a message too
    allowed = ROOM_MESSAGE_BURST + ROOM_MESSAGE_RATE * took
    figures = (
        f"{ADDRESSES} addresses x {CONNECTIONS_PER_ADDRESS} connections x {each + 1} messages "
        f"({sent}) in {took:.2f} s: a member received {received} (room bound {allowed:.0f}), "
        f"{refused} refused rate_limited (counted {after - before:.0f}); "
        f"{bystander[0].describe()}"
    )
    print(figures)
    assert received <= allowed, figures
    assert refused >= sent - allowed - len(senders), figures
    assert after - before >= refused, figures
    BystanderProbe.assert_fast(bystander, "many addresses under their own bounds")


async def deliver_marker(cluster: Any, room: str, member: RawWebSocket) -> None:
    """A message from one more client, sent again after each refusal's ``retry_after`` until the
    room takes it: once the member has it, it has every message the room took before."""
    marker = await RawWebSocket.connect("127.0.0.1", cluster.nodes[0].port, source=fresh_address())
    try:
        await join(marker, room, "marker")
        async with asyncio.timeout(scaled(20)):
            for attempt in itertools.count():
                await marker.send(
                    {"type": "message", "room": room, "text": "end", "id": f"end{attempt}"}
                )
                answer = await marker.next_text(id=f"end{attempt}")
                if answer["type"] == "ack":
                    break
                await asyncio.sleep(float(answer.get("retry_after", 0.1)))
        await member.next_text(timeout=10, type="message", text="end")
    finally:
        await marker.close()


# --- the HTTP API: a request at each documented bound passes, one past it is refused ----------

TARGET_BYTES = 2048  # then 414
HEAD_BYTES = 16 * 1024  # request line and headers; then 431
HEADERS = 128  # then 431
BODY_BYTES = 64 * 1024  # ROOMCAST_MAX_FRAME_BYTES; then 413 from the Content-Length
API_BURST = 40  # ROOMCAST_API_RATE_BURST, per client address and node in open mode


async def http_from(source: str, port: int, request: bytes) -> Answer:
    """One request from ``source`` on a connection of its own, its whole answer."""
    reader, writer = await open_socket("127.0.0.1", port, source=source)
    try:
        writer.write(request)
        raw = await asyncio.wait_for(reader.read(), scaled(10))
    finally:
        writer.close()
    return parse_answer(raw)


def long_target(length: int) -> bytes:
    base = "/api/rooms/lobby/history?limit=1&pad="
    return request_bytes("GET", base + "x" * (length - len(base)), "roomcast")


def long_head(length: int) -> bytes:
    """A head of ``length`` bytes from the request line to the blank line that ends it."""
    plain = request_bytes("GET", "/api/rooms/lobby/history?limit=1", "roomcast")
    filler = "X-Filler: "
    pad = length - len(plain) - len(filler) - 2
    return request_bytes(
        "GET", "/api/rooms/lobby/history?limit=1", "roomcast", [("X-Filler", "x" * pad)]
    )


def many_headers(count: int) -> bytes:
    # Host and Connection are two of them
    filler = [(f"X-Filler-{i}", "x") for i in range(count - 2)]
    return request_bytes("GET", "/api/rooms/lobby/history?limit=1", "roomcast", filler)


def long_body(length: int) -> bytes:
    head, tail = b'{"username":"poster","text":"', b'"}'
    body = head + b"x" * (length - len(head) - len(tail)) + tail
    return request_bytes(
        "POST",
        f"/api/rooms/body-{uuid.uuid4().hex[:6]}/messages",
        "roomcast",
        [("Content-Type", "application/json")],
        body,
    )


HTTP_BOUNDS: dict[str, tuple[Callable[[int], bytes], int, int]] = {
    "request target bytes": (long_target, TARGET_BYTES, 414),
    "head bytes": (long_head, HEAD_BYTES, 431),
    "headers": (many_headers, HEADERS, 431),
    "body bytes": (long_body, BODY_BYTES, 413),
}


@pytest.mark.parametrize("bound", list(HTTP_BOUNDS))
async def test_an_api_request_at_its_bound_is_answered_and_one_past_it_refused(
    cluster: Any, bound: str
) -> None:
    build, limit, status = HTTP_BOUNDS[bound]
    node = cluster.nodes[0]
    at_bound = await http_from(fresh_address(), node.port, build(limit))
    before = metrics_text(node.metrics_url)
    past_bound = await http_from(fresh_address(), node.port, build(limit + 1))
    after = metrics_text(node.metrics_url)
    counted = grew(before, after, "roomcast_api_requests_total", f'status="{status}"')
    figures = (
        f"{bound}: {limit} answered {at_bound.status}, {limit + 1} answered "
        f"{past_bound.status} {past_bound.body[:80]!r} (counted {counted})"
    )
    print(figures)
    assert at_bound.status in (200, 201), figures
    assert past_bound.status == status, figures
    assert counted == 1, figures


async def test_the_api_rate_takes_its_burst_and_refuses_the_next_429_with_retry_after(
    cluster: Any, probe: BystanderProbe
) -> None:
    """The burst's requests and a few more, pipelined on one keep-alive connection: at least
    the burst is answered, the rest (beyond what refilled meanwhile) 429 with `Retry-After`."""
    node = cluster.nodes[0]
    sent = API_BURST + 10
    target = f"/api/rooms/rate-{uuid.uuid4().hex[:6]}/history?limit=1"
    requests = b"".join(
        request_bytes("GET", target, "roomcast", close=index == sent - 1) for index in range(sent)
    )
    before = metrics_text(node.metrics_url)
    loop = asyncio.get_running_loop()
    with probe.on(node) as bystander:
        started = loop.time()
        reader, writer = await open_socket("127.0.0.1", node.port, source=fresh_address())
        try:
            writer.write(requests)
            raw = await asyncio.wait_for(reader.read(), scaled(20))
        finally:
            writer.close()
        took = loop.time() - started
    after = metrics_text(node.metrics_url)
    answers = [parse_answer(b"HTTP/1.1" + part) for part in raw.split(b"HTTP/1.1")[1:]]
    statuses = [a.status for a in answers]
    refused = [a for a in answers if a.status == 429]
    counted = grew(before, after, "roomcast_api_requests_total", 'status="429"')
    figures = (
        f"{sent} pipelined requests in {took:.2f} s: {statuses.count(200)} answered 200, "
        f"{len(refused)} 429 (counted {counted}), Retry-After "
        f"{sorted({a.header('Retry-After') for a in refused}, key=str)}; "
        f"{bystander[0].describe()}"
    )
    print(figures)
    assert len(answers) == sent, figures
    assert API_BURST <= statuses.count(200) <= API_BURST + 20 * took + 1, figures
    assert statuses.count(200) + len(refused) == sent, figures
    assert all(a.header("Retry-After") for a in refused), figures
    assert counted == len(refused), figures
    BystanderProbe.assert_fast(bystander, "a client past its API rate")


async def test_a_head_past_the_bound_behind_another_request_is_refused_431(cluster: Any) -> None:
    """The same head bound for a request pipelined behind another: its head is buffered before
    the first is answered, and parsed whole from that buffer."""
    node = cluster.nodes[0]
    first = request_bytes("GET", "/api/rooms/lobby/history?limit=1", "roomcast", close=False)
    before = metrics_text(node.metrics_url)
    reader, writer = await open_socket("127.0.0.1", node.port, source=fresh_address())
    try:
        writer.write(first + long_head(HEAD_BYTES + 1))
        raw = await asyncio.wait_for(reader.read(), scaled(10))
    finally:
        writer.close()
    after = metrics_text(node.metrics_url)
    statuses = [parse_answer(b"HTTP/1.1" + part).status for part in raw.split(b"HTTP/1.1")[1:]]
    counted = grew(before, after, "roomcast_api_requests_total", 'status="431"')
    figures = f"a plain request, then a {HEAD_BYTES + 1}-byte head: {statuses} (counted {counted})"
    print(figures)
    assert statuses == [200, 431], figures
    assert counted == 1, figures


# A request far past its bound, sent whole: the node refuses it from what it read first and
# must not reset its answer away by closing with the rest unread.
FAR_PAST: dict[str, tuple[bytes, int]] = {
    "a 200 KB head": (long_head(200_000), 431),
    "a 1 MB body": (long_body(1_000_000), 413),
}
TRIES = 5


@pytest.mark.parametrize("case", list(FAR_PAST))
async def test_a_request_far_past_its_bound_still_gets_its_answer(cluster: Any, case: str) -> None:
    request, status = FAR_PAST[case]
    node = cluster.nodes[0]
    answers: list[int | str] = []
    for _ in range(TRIES):
        try:
            answers.append((await http_from(fresh_address(), node.port, request)).status)
        except ConnectionError as exc:
            answers.append(type(exc).__name__)
    print(f"{case} straight to a node, {TRIES} times: {answers}")
    assert answers == [status] * TRIES, f"{case}: {answers}"


# --- many addresses at once, each under its own handshake bound: the node's bound holds ------

HANDSHAKE_ADDRESSES = 20
HANDSHAKES_PER_ADDRESS = 60  # each under its per-address burst (400)
NODE_SETUP_BURST = 500  # ROOMCAST_ADMISSION_RATE_BURST
NODE_SETUP_RATE = 1000  # ROOMCAST_ADMISSION_RATE_PER_SECOND
MAX_RETRY_AFTER = 30  # ROOMCAST_ADMISSION_MAX_RETRY_AFTER


async def handshake_status(node: Any, source: str) -> tuple[int, str | None]:
    """A WebSocket handshake's status and Retry-After; the socket is closed at once."""
    reader, writer = await open_socket("127.0.0.1", node.port, source=source)
    try:
        writer.write(handshake_request("127.0.0.1", node.port))
        status, head = await read_head(reader, timeout=30)
    finally:
        writer.close()
    retry_after = next(
        (
            line.split(":", 1)[1].strip()
            for line in head.split("\r\n")
            if line.lower().startswith("retry-after:")
        ),
        None,
    )
    return status, retry_after


async def test_many_addresses_each_under_its_handshake_bound_meet_the_nodes(
    cluster: Any, probe: BystanderProbe
) -> None:
    """20 addresses, 60 handshakes each at once (1,200; each address under its 400): the node
    admits its burst and rate, answers the rest 503 with `Retry-After` (never the per-address
    429), counts them, and its members keep their round trip."""
    node = cluster.nodes[0]
    sources = [fresh_address() for _ in range(HANDSHAKE_ADDRESSES)]
    before = metrics_text(node.metrics_url)
    cpu_before = cpu_seconds(node.process.pid)
    loop = asyncio.get_running_loop()
    with probe.on(node) as bystander:
        started = loop.time()
        answers = await asyncio.gather(
            *(
                handshake_status(node, source)
                for source in sources
                for _ in range(HANDSHAKES_PER_ADDRESS)
            )
        )
        took = loop.time() - started
    cpu = cpu_seconds(node.process.pid) - cpu_before
    after = metrics_text(node.metrics_url)
    statuses = [status for status, _ in answers]
    waits = sorted({float(wait) for status, wait in answers if status == 503 and wait})
    admitted, refused = statuses.count(101), statuses.count(503)
    counted = grew(before, after, "roomcast_handshakes_rejected_total", 'status="503"')
    allowed = NODE_SETUP_BURST + NODE_SETUP_RATE * took
    figures = (
        f"{len(answers)} handshakes of {HANDSHAKE_ADDRESSES} addresses in {took:.2f} s "
        f"(node CPU {cpu:.2f} s): "
        f"{admitted} opened (node bound {allowed:.0f}), {refused} 503 (counted {counted:.0f}), "
        f"Retry-After {waits[:1]}..{waits[-1:]}, other {sorted(set(statuses) - {101, 503})}; "
        f"{bystander[0].describe()}"
    )
    print(figures)
    assert admitted + refused == len(answers), figures
    assert admitted <= allowed, figures
    assert counted == refused, figures
    assert all(0 < wait <= MAX_RETRY_AFTER for wait in waits), figures
    assert refused == 0 or waits, figures
    BystanderProbe.assert_fast(bystander, "handshakes of many addresses")


# --- per client (an open-mode address) over several connections, and a frame's JSON values ----

CLIENT_TYPING_BURST = 20  # ROOMCAST_CLIENT_TYPING_RATE_BURST
CLIENT_CONNECTIONS = 5  # so that 21 typing leave each connection within its own 5
MAX_FRAME_VALUES = 64  # wire/frame_values.py, in a frame over 512 characters


def spread(total: int, build: Callable[[int], list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    """``total`` frames over the client's connections, each share within a connection's limits."""
    shares = [
        total // CLIENT_CONNECTIONS + (i < total % CLIENT_CONNECTIONS)
        for i in range(CLIENT_CONNECTIONS)
    ]
    return [build(share) for share in shares]


def messages_of(tag: str) -> Callable[[int], list[dict[str, Any]]]:
    def build(count: int) -> list[dict[str, Any]]:
        key = uuid.uuid4().hex[:6]
        return [{"type": "message", "text": tag, "id": f"{key}-{i}"} for i in range(count)]

    return build


# name: (the frames of each connection for a total, the bound the sentinels count in, the code)
CLIENT_BOUNDS: dict[str, tuple[Callable[[int], list[list[dict[str, Any]]]], int]] = {
    # each connection's sentinel is a message of the client too
    "messages per client": (
        lambda total: spread(total, messages_of("m")),
        CLIENT_MESSAGE_BURST - CLIENT_CONNECTIONS,
    ),
    "typing per client": (lambda total: spread(total, typings), CLIENT_TYPING_BURST),
}


@pytest.mark.parametrize("bound", list(CLIENT_BOUNDS))
async def test_a_client_at_its_bound_over_connections_passes_and_one_past_it_is_refused(
    cluster: Any, bound: str
) -> None:
    build, limit = CLIENT_BOUNDS[bound]
    node = cluster.nodes[0]
    outcomes: dict[int, list[str]] = {}
    for total in (limit, limit + 1):
        room = f"client-{uuid.uuid4().hex[:8]}"  # of its own: the room's typing bound is 40
        source = fresh_address()
        sockets = [
            await RawWebSocket.connect("127.0.0.1", node.port, source=source)
            for _ in range(CLIENT_CONNECTIONS)
        ]
        try:
            for ws in sockets:
                await join(ws, room, "tester")
            before = metrics_text(node.metrics_url)
            errors = await asyncio.gather(
                *(
                    answers_to(ws, frames, room)
                    for ws, frames in zip(sockets, build(total), strict=True)
                )
            )
            counted = grew(
                before, metrics_text(node.metrics_url), "roomcast_frames_rejected_total", "rate"
            )
        finally:
            for ws in sockets:
                await ws.close()
        outcomes[total] = [str(e.get("code")) for share in errors for e in share]
        assert counted == len(outcomes[total]), (bound, total, counted, outcomes[total])
    figures = f"{bound} over {CLIENT_CONNECTIONS} connections of one address: {outcomes}"
    print(figures)
    assert outcomes == {limit: [], limit + 1: ["rate_limited"]}, figures


def with_values(values: int) -> dict[str, Any]:
    """A message of over 512 characters holding ``values`` JSON values (members and items)."""
    members = ("type", "text", "id", "pad")
    return {
        "type": "message",
        "text": "x" * 600,
        "id": f"v{values}",
        "pad": [0] * (values - len(members)),
    }


async def test_a_frame_at_its_json_values_bound_passes_and_one_past_it_is_invalid(
    cluster: Any,
) -> None:
    node = cluster.nodes[0]
    room = f"values-{uuid.uuid4().hex[:8]}"
    at_bound, past_bound = await two_clients_in(room, node)
    try:
        await at_bound.send(with_values(MAX_FRAME_VALUES))
        passed = await at_bound.next_text(id=f"v{MAX_FRAME_VALUES}")
        before = metrics_text(node.metrics_url)
        await past_bound.send(with_values(MAX_FRAME_VALUES + 1))
        refused = await past_bound.next_text(type="error")
        counted = grew(
            before, metrics_text(node.metrics_url), "roomcast_frames_rejected_total", "invalid"
        )
    finally:
        await at_bound.close()
        await past_bound.close()
    figures = (
        f"JSON values: {MAX_FRAME_VALUES} answered {passed.get('type')}, "
        f"{MAX_FRAME_VALUES + 1} {refused.get('code')} (counted {counted})"
    )
    print(figures)
    assert passed.get("type") == "ack", figures
    assert refused.get("code") == "invalid_frame" and counted == 1, figures
