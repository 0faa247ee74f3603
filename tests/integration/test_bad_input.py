"""Hostile and broken input: each gets its error frame or close code, is counted, and the node
keeps serving everyone else."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator

import pytest
from roomcast_dev.devcluster import LocalCluster, NodeProcess
from websockets.exceptions import ConnectionClosed

from tests.support.cluster import FAST_ENV, SHARED_LIMITS_OFF, http_get, metric_value
from tests.support.wsclient import Client, scaled

pytestmark = pytest.mark.integration

ROOM = "bad-input"


@pytest.fixture(scope="module")
def node_cluster() -> Iterator[LocalCluster]:
    # Small limits so floods and slow consumers are quick to provoke.
    env = {
        "ROOMCAST_MAX_FRAME_BYTES": "4096",
        "ROOMCAST_RATE_LIMIT_PER_SECOND": "20",
        "ROOMCAST_RATE_LIMIT_BURST": "40",
        "ROOMCAST_MAX_ROOMS_PER_CONNECTION": "3",
        "ROOMCAST_SEND_BUFFER_BYTES": "65536",
        **SHARED_LIMITS_OFF,
    }
    with LocalCluster(2, nginx=False, node_env=env) as running:
        yield running


@pytest.fixture
async def bystander(node_cluster: LocalCluster) -> AsyncIterator[tuple[Client, Client]]:
    """Two well-behaved users on the node under attack; they must keep chatting."""
    url = node_cluster.nodes[0].url
    first, second = await Client.connect(url), await Client.connect(url)
    await first.join(ROOM, "calm1")
    await second.join(ROOM, "calm2")
    yield first, second
    await first.close()
    await second.close()


async def assert_still_serving(pair: tuple[Client, Client], text: str) -> None:
    first, second = pair
    await first.send(type="message", text=text)
    assert (await second.recv_type("message", text=text))["username"] == "calm1"


def rejected(node: NodeProcess, code: str) -> float:
    return metric_value(
        http_get(f"{node.metrics_url}/metrics")[1], "roomcast_frames_rejected_total", {"code": code}
    )


ERROR_CASES = [
    ("{oops", "invalid_json"),
    ("[1, 2, 3]", "invalid_frame"),
    ('"just a string"', "invalid_frame"),
    ('{"type": 7}', "invalid_frame"),
    ('{"no": "type"}', "invalid_frame"),
    ('{"type": "dance"}', "unknown_type"),
    ('{"type": "join", "username": "x"}', "invalid_room"),
    ('{"type": "join", "room": "has space", "username": "x"}', "invalid_room"),
    ('{"type": "join", "room": "' + "r" * 65 + '", "username": "x"}', "invalid_room"),
    ('{"type": "join", "room": "ok"}', "invalid_username"),
    ('{"type": "join", "room": "ok", "username": "<script>"}', "invalid_username"),
    ('{"type": "join", "room": "ok", "username": "   "}', "invalid_username"),
    ('{"type": "join", "room": "ok", "username": ["x"]}', "invalid_username"),
    ('{"type": "message", "text": 42}', "invalid_text"),
    ('{"type": "message", "text": "before join"}', "not_joined"),
    ('{"type": "typing"}', "not_joined"),
    ('{"type": "leave"}', "not_joined"),
    ('{"type": "message", "text": "x", "room": 5}', "invalid_room"),
    ("[" * 4000, "invalid_json"),  # deep nesting, still under the frame limit
    ('{"type": "message", "text": "x", "n": 1e999999}', "invalid_json"),
]


@pytest.mark.parametrize(("frame", "code"), ERROR_CASES)
async def test_rejected_frame_gets_error_and_connection_stays_open(
    node_cluster: LocalCluster, bystander: tuple[Client, Client], frame: str, code: str
) -> None:
    node = node_cluster.nodes[0]
    before = rejected(node, code)
    client = await Client.connect(node.url)
    try:
        await client.send_raw(frame)
        error = await client.recv_type("error")
        assert error["code"] == code
        assert isinstance(error["reason"], str) and error["reason"]
        # Still open and usable after the error.
        await client.join("after-error", "fine")
        assert rejected(node, code) == before + 1
        await assert_still_serving(bystander, f"after {code}")
    finally:
        await client.close()


async def test_too_many_rooms(node_cluster: LocalCluster) -> None:
    client = await Client.connect(node_cluster.nodes[0].url)
    try:
        for index in range(3):
            await client.join(f"many-{index}", "me")
        await client.send(type="join", room="many-3", username="me")
        error = await client.recv_type("error")
        assert error["code"] == "too_many_rooms" and error["room"] == "many-3"
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("payload", "code", "metric_code"),
    [
        (b"\x00\x01binary", 1003, "binary_frame"),
        ("x" * 5000, 1009, "frame_too_big"),  # over ROOMCAST_MAX_FRAME_BYTES=4096
    ],
)
async def test_protocol_rejections_close_with_the_right_code(
    node_cluster: LocalCluster,
    bystander: tuple[Client, Client],
    payload: str | bytes,
    code: int,
    metric_code: str | None,
) -> None:
    node = node_cluster.nodes[0]
    before = rejected(node, metric_code) if metric_code else 0.0
    client = await Client.connect(node.url)
    await client.join(ROOM, "rude")
    await client.send_raw(payload)
    close_code, _ = await client.expect_close()
    assert close_code == code
    if metric_code:
        assert rejected(node, metric_code) == before + 1
    # Its membership is cleaned up: the others see it leave.
    await bystander[0].recv_type("user_left", username="rude")
    await assert_still_serving(bystander, f"after close {code}")


async def test_invalid_utf8_closes_1007(node_cluster: LocalCluster) -> None:
    node = node_cluster.nodes[0]
    with socket.create_connection(("127.0.0.1", node.port), timeout=scaled(5)) as sock:
        _handshake(sock)
        sock.sendall(_masked_frame(0x1, b"\xff\xfe\xfd"))
        assert _read_close_code(sock) == 1007


async def test_flood_gets_rate_limited_then_closed_1008(
    node_cluster: LocalCluster, bystander: tuple[Client, Client]
) -> None:
    node = node_cluster.nodes[0]
    client = await Client.connect(node.url)
    await client.join(ROOM, "flooder")
    # Raw frames in one write: a flood that ignores every rate_limited error in between.
    flood = "".join(json.dumps({"type": "typing", "n": i}) + "\n" for i in range(1))
    try:
        for index in range(400):
            await client.send_raw(flood.strip() if index % 2 else json.dumps({"type": "typing"}))
    except ConnectionClosed:
        pass
    close_code, reason = await client.expect_close()
    assert close_code == 1008 and reason is not None and "flood" in reason
    text = http_get(f"{node.metrics_url}/metrics")[1]
    assert metric_value(text, "roomcast_frames_rejected_total", {"code": "rate_limited"}) > 0
    assert metric_value(text, "roomcast_frames_rejected_total", {"code": "flood"}) >= 1
    await assert_still_serving(bystander, "after flood")


async def test_slow_consumer_is_dropped_and_memory_stays_bounded() -> None:
    """A member that never reads is closed (1013) once it has held more than its send buffer
    for ROOMCAST_LAG_TIMEOUT (a reader that reads would have drained by then), and the node's
    memory stays bounded meanwhile."""
    env = dict(FAST_ENV, ROOMCAST_SEND_BUFFER_BYTES="262144", ROOMCAST_LAG_TIMEOUT="1")
    room = "slow-room"
    with (
        LocalCluster(2, nginx=False, node_env=env) as cluster,
        socket.create_connection(("127.0.0.1", cluster.nodes[0].port), timeout=scaled(5)) as sock,
    ):
        node = cluster.nodes[0]
        # A small receive buffer so the kernel does not soak up megabytes for the lazy reader.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        _handshake(sock)
        join = {"type": "join", "room": room, "username": "lazy"}
        sock.sendall(_masked_frame(0x1, json.dumps(join).encode()))
        talker = await Client.connect(cluster.nodes[1].url)
        watcher = await Client.connect(node.url)
        await watcher.join(room, "watcher")
        await talker.join(room, "talker")
        rss_before = _rss_kib(node.process.pid)
        text = "y" * 60_000
        sent = 0
        while True:
            await talker.send(type="message", text=text)
            sent += 1
            # Paced by the watcher, a fast reader on the same node as the lazy one.
            await watcher.recv_type("message")
            left = [e for e in watcher._buffer if e["type"] == "user_left"]
            if left or sent >= 1000:
                break
        await watcher.recv_type("user_left", username="lazy", timeout=10)
        metrics = http_get(f"{node.metrics_url}/metrics")[1]
        assert metric_value(metrics, "roomcast_slow_consumer_drops_total") == 1
        assert (
            metric_value(metrics, "roomcast_frames_rejected_total", {"code": "slow_consumer"}) == 1
        )
        # 60 MB went past the lazy reader; the node kept at most its buffer limit for it.
        assert sent < 1000
        assert _rss_kib(node.process.pid) - rss_before < 32 * 1024
        # The lazy socket got a 1013 close frame at the end of what it was sent, or was cut.
        sock.settimeout(scaled(10))
        await talker.close()
        await watcher.close()


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_garbage_instead_of_a_handshake(node_cluster: LocalCluster) -> None:
    node = node_cluster.nodes[0]
    with socket.create_connection(("127.0.0.1", node.port), timeout=scaled(5)) as sock:
        sock.sendall(b"\x16\x03\x01 this is not http\r\n\r\n")
        # Not a WebSocket handshake, so the HTTP side answers: a JSON 400, then it closes.
        answer = b""
        while chunk := sock.recv(1024):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 "), answer
        assert b'"code":"invalid_request"' in answer
    with socket.create_connection(("127.0.0.1", node.port), timeout=scaled(5)) as sock:
        sock.sendall(
            b"GET /elsewhere HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        assert sock.recv(1024).startswith(b"HTTP/1.1 404")
    with socket.create_connection(("127.0.0.1", node.port), timeout=scaled(5)) as sock:
        sock.sendall(b"GET /chat HTTP/1.1\r\nHost: x\r\n\r\n")  # plain HTTP, no upgrade
        assert sock.recv(1024).startswith(b"HTTP/1.1 426")
    client = await Client.connect(node.url)
    await client.close()


# A minimal raw WebSocket client for what the library client refuses to send.


def _handshake(sock: socket.socket) -> None:
    sock.sendall(
        b"GET /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        assert chunk, "closed during handshake"
        response += chunk
    assert response.startswith(b"HTTP/1.1 101")


def _masked_frame(opcode: int, payload: bytes) -> bytes:
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    length = len(payload)
    if length < 126:
        header = bytes((0x80 | opcode, 0x80 | length))
    else:
        header = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    return header + mask + masked


def _read_close_code(sock: socket.socket) -> int:
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    # Skip text frames (the welcome) until the close frame (opcode 8).
    index = 0
    while index < len(data):
        opcode = data[index] & 0x0F
        length = data[index + 1] & 0x7F
        start = index + 2
        if length == 126:
            length = int.from_bytes(data[start : start + 2], "big")
            start += 2
        if opcode == 0x8:
            return int.from_bytes(data[start : start + 2], "big")
        index = start + length
    raise AssertionError(f"no close frame in {data!r}")


async def test_node_survives_all_of_it(node_cluster: LocalCluster) -> None:
    node = node_cluster.nodes[0]
    assert node.process.alive()
    assert http_get(f"{node.metrics_url}/healthz")[0] == 200
    await asyncio.sleep(0)
