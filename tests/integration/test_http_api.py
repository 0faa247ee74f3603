"""The HTTP API and Server-Sent Events through REAL nginx, redis-server and 3 node processes."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from roomcast_dev.devcluster import LocalCluster
from websockets.exceptions import InvalidStatus

from roomcast.core.auth import issue_token
from tests.support.cluster import FAST_ENV, http_get
from tests.support.httpclient import EventStream, request
from tests.support.wsclient import Client, clients_on_distinct_nodes, scaled

pytestmark = pytest.mark.integration

API_ENV = {
    **FAST_ENV,
    "ROOMCAST_API_RATE_PER_SECOND": "5000",
    "ROOMCAST_API_RATE_BURST": "5000",
    "ROOMCAST_SSE_HEARTBEAT": "0.3",
}
SECRET = "s3cret-for-the-api-tests-0123456789abcdef"
API_KEY = "backend-service-key-0123456789"


@pytest.fixture(scope="module")
def api_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(3, node_env=API_ENV) as running:
        yield running


@pytest.fixture
def fresh_api_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(3, node_env=API_ENV) as running:
        yield running


def new_room() -> str:
    return "api-" + uuid.uuid4().hex[:12]


def api(cluster: LocalCluster, room: str, endpoint: str) -> str:
    return f"{cluster.http_url}/api/rooms/{room}/{endpoint}"


def api_requests(cluster: LocalCluster, status: str, endpoint: str | None = None) -> float:
    total = 0.0
    for node in cluster.nodes:
        _, text = http_get(node.metrics_url + "/metrics")
        for line in text.splitlines():
            wanted = line.startswith("roomcast_api_requests_total{") and (
                f'status="{status}"' in line
                and (endpoint is None or f'endpoint="{endpoint}"' in line)
            )
            if wanted:
                total += float(line.rpartition(" ")[2])
    return total


async def test_post_reaches_websocket_members_on_every_node(api_cluster: LocalCluster) -> None:
    room = new_room()
    members = await clients_on_distinct_nodes(api_cluster.url, 3)
    try:
        for index, member in enumerate(members):
            await member.join(room, f"user{index}")
        posted = await request(
            "POST",
            api(api_cluster, room, "messages"),
            json_body={"text": "from the backend ✓", "username": "deploy-bot"},
        )
        assert posted.status == 201, posted.body
        assert posted.headers["content-type"] == "application/json"
        assert posted.headers["x-roomcast-node"]
        reply = posted.json()
        assert reply["room"] == room and reply["offset"] == 1
        for member in members:
            message = await member.recv_type("message")
            assert message["text"] == "from the backend ✓"
            assert message["username"] == "deploy-bot"
            assert (message["offset"], message["epoch"]) == (reply["offset"], reply["epoch"])
    finally:
        for member in members:
            await member.close()


async def test_presence_and_history_through_nginx(api_cluster: LocalCluster) -> None:
    room = new_room()
    alice, bob = await clients_on_distinct_nodes(api_cluster.url, 2)
    try:
        await alice.join(room, "alice")
        await bob.join(room, "bob")
        for text in ("one", "two", "three"):
            await alice.send(type="message", text=text)
            await bob.recv_type("message", text=text)
        presence = await request("GET", api(api_cluster, room, "presence"))
        assert presence.status == 200
        assert presence.json() == {
            "type": "presence", "room": room,
            "members": [
                {"username": "alice", "connections": 1,
                 "user_ids": {alice.welcome["user_id"]: 1}},
                {"username": "bob", "connections": 1, "user_ids": {bob.welcome["user_id"]: 1}},
            ],
        }  # fmt: skip
        history = await request("GET", api(api_cluster, room, "history") + "?limit=2")
        assert history.status == 200
        body = history.json()
        assert body["offset"] == 3
        assert [(m["offset"], m["text"]) for m in body["messages"]] == [(2, "two"), (3, "three")]
        head = await request("HEAD", api(api_cluster, room, "history"))
        assert head.status == 200 and head.body == b""
    finally:
        await alice.close()
        await bob.close()


async def test_event_stream_sees_what_websocket_members_see_and_resumes(
    api_cluster: LocalCluster,
) -> None:
    room = new_room()
    stream = await EventStream.open(api(api_cluster, room, "events"))
    alice, bob = await clients_on_distinct_nodes(api_cluster.url, 2)
    try:
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        opened = await stream.next()
        assert opened.data == {"type": "joined", "room": room, "epoch": opened.data["epoch"],
                               "offset": 0}  # fmt: skip
        await alice.join(room, "alice")
        await bob.join(room, "bob")
        for i in range(20):
            await (alice if i % 2 else bob).send(type="message", text=f"m{i}")
        await bob.send(type="typing")
        websocket_view = [await alice.recv_type("message") for _ in range(20)]
        seen: list[dict[str, Any]] = []
        others: list[dict[str, Any]] = []
        while len(seen) < 20 or not any(e["type"] == "typing" for e in others):
            event = await stream.next()
            if event.data["type"] == "message":
                assert event.id == event.data["offset"]
                assert event.raw_id == f"{event.data['epoch']}:{event.data['offset']}"
                seen.append(event.data)
            else:
                assert event.id is None  # only history-kept messages move Last-Event-ID
                others.append(event.data)
        assert seen == websocket_view  # same events, same order, same bytes (as JSON)
        bob_id, alice_id = bob.welcome["user_id"], alice.welcome["user_id"]
        assert {"type": "typing", "room": room, "username": "bob", "user_id": bob_id} in others
        assert {
            "type": "user_joined",
            "room": room,
            "username": "alice",
            "user_id": alice_id,
        } in others
        await stream.heartbeat()
        last_id = seen[-1]["offset"]
        last_event_id = f"{seen[-1]['epoch']}:{last_id}"  # what EventSource keeps
        stream.close()

        # Offline: 10 more messages; then resume with Last-Event-ID.
        for i in range(20, 30):
            await alice.send(type="message", text=f"m{i}")
        await bob.recv_type("message", text="m29")
        resumed = await EventStream.open(
            api(api_cluster, room, "events"), {"Last-Event-ID": last_event_id}
        )
        first = await resumed.next()
        assert first.data["type"] == "joined" and first.data["recovered"] is True
        await bob.send(type="message", text="live")
        texts = [(await resumed.next_type("message")).data["text"] for _ in range(11)]
        assert texts == [f"m{i}" for i in range(20, 30)] + ["live"]
        resumed.close()

        # An offset older than the history kept, or from another epoch: said, not guessed.
        stale = await EventStream.open(
            api(api_cluster, room, "events") + "?epoch=not-the-epoch", {"Last-Event-ID": "3"}
        )
        start = (await stale.next()).data
        assert (start["recovered"], start["reason"]) == (False, "epoch_changed")
        stale.close()
    finally:
        stream.close()
        await alice.close()
        await bob.close()


async def test_event_stream_to_an_http_10_client_is_not_chunked(
    api_cluster: LocalCluster,
) -> None:
    """An HTTP/1.0 client cannot read chunks: its stream's body is the events themselves, until
    the connection closes."""
    room = new_room()
    node = api_cluster.nodes[0]
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    writer.write(f"GET /api/rooms/{room}/events HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    alice = await Client.connect(node.url)
    try:
        received = b""
        async with asyncio.timeout(scaled(10)):
            while b"\r\n\r\n" not in received or b'"type":"joined"' not in received:
                received += await reader.read(65536)
            await alice.join(room, "alice")
            await alice.send(type="message", text="x" * 5000)
            while b"x" * 5000 + b'"' not in received:
                received += await reader.read(65536)
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.0 200"), head
        assert b"transfer-encoding" not in head.lower()
        # Events straight after the head (a chunk size line would come first, in hex).
        assert body.startswith(b"retry:"), body[:40]
        assert b"\r\n1" not in body and b"\n\r\n" not in body
    finally:
        writer.close()
        await alice.close()


async def test_event_stream_survives_its_node_being_killed(
    fresh_api_cluster: LocalCluster,
) -> None:
    """SIGKILL the node serving the stream: the consumer reconnects through nginx with
    Last-Event-ID and ends with every message exactly once, in order."""
    cluster = fresh_api_cluster
    room = new_room()
    url = api(cluster, room, "events")
    stream = await EventStream.open(url)
    victim = next(n for n in cluster.nodes if n.node_id == stream.node)
    sender = None
    for _ in range(30):
        candidate = await Client.connect(cluster.url)
        if candidate.node != victim.node_id:
            sender = candidate
            break
        await candidate.close()
    assert sender is not None
    try:
        await stream.next_type("joined")
        await sender.join(room, "sender")
        received: list[int] = []
        total = 60
        for i in range(total):
            await sender.send(type="message", text=str(i))
            if i == 20:
                victim.process.signal(signal.SIGKILL)
        last = 0
        deadline = time.monotonic() + scaled(30)
        while len(received) < total and time.monotonic() < deadline:
            try:
                event = await stream.next(timeout=5)
            except (EOFError, TimeoutError):
                stream.close()
                stream = await EventStream.open(url, {"Last-Event-ID": str(last)})
                continue
            if event.data["type"] == "joined" and "recovered" in event.data:
                assert event.data["recovered"] is True, event.data
            if event.data["type"] == "message":
                received.append(int(event.data["text"]))
                last = event.data["offset"]
        assert received == list(range(total))
        assert stream.node != victim.node_id
    finally:
        stream.close()
        await sender.close()


# (method, path after /api/rooms/<room>/, headers, body, status, code)
BAD_REQUESTS: list[tuple[str, str, dict[str, str], bytes | None, int, str]] = [
    ("POST", "messages", {"Content-Type": "application/json"}, b"{not json", 400, "invalid_json"),
    ("POST", "messages", {"Content-Type": "application/json"}, b"[1,2]", 400, "invalid_frame"),
    ("POST", "messages", {"Content-Type": "application/json"}, b'{"username":"x"}', 400,
     "invalid_text"),
    ("POST", "messages", {"Content-Type": "application/json"}, b'{"text":5,"username":"x"}', 400,
     "invalid_text"),
    ("POST", "messages", {"Content-Type": "application/json"}, b'{"text":"hi"}', 400,
     "invalid_username"),
    ("POST", "messages", {"Content-Type": "application/json"},
     b'{"text":"hi","username":"<script>"}', 400, "invalid_username"),
    ("POST", "messages", {"Content-Type": "text/plain"}, b"hi", 415, "unsupported_media_type"),
    ("POST", "messages", {"Content-Type": "application/json"},
     b'{"text":"' + b"x" * 70_000 + b'","username":"x"}', 413, "frame_too_big"),
    ("GET", "messages", {}, None, 405, "method_not_allowed"),
    ("DELETE", "presence", {}, None, 405, "method_not_allowed"),
    ("GET", "nothing-here", {}, None, 404, "not_found"),
    ("GET", "history?limit=0", {}, None, 400, "invalid_limit"),
    ("GET", "history?limit=abc", {}, None, 400, "invalid_limit"),
    ("GET", "events", {"Last-Event-ID": "yesterday"}, None, 400, "invalid_since"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "code"),
    BAD_REQUESTS,
    ids=[f"{m}-{p.split('?')[0]}-{s}-{c}" for m, p, _, _, s, c in BAD_REQUESTS],
)
async def test_bad_requests_get_clear_json_errors(
    api_cluster: LocalCluster,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None,
    status: int,
    code: str,
) -> None:
    before = api_requests(api_cluster, str(status))
    answer = await request(
        method, f"{api_cluster.http_url}/api/rooms/{new_room()}/{path}", body=body, headers=headers
    )
    assert answer.status == status, answer.body
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["code"] == code
    assert answer.json()["reason"]
    if status == 405:
        assert answer.headers["allow"]
    assert api_requests(api_cluster, str(status)) == before + 1


async def test_invalid_room_and_unknown_paths_are_404(api_cluster: LocalCluster) -> None:
    for path in ("/api/rooms/bad%20room/presence", "/api/rooms/" + "r" * 65 + "/history",
                 "/api/nope", "/api/rooms/general"):  # fmt: skip
        answer = await request("GET", api_cluster.http_url + path)
        assert answer.status == 404, path
        assert answer.json()["code"] in ("invalid_room", "not_found")


async def test_malformed_http_is_refused_and_the_node_keeps_serving(
    api_cluster: LocalCluster,
) -> None:
    node = api_cluster.nodes[0]
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    writer.write(b"POST /api/rooms/x/messages HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), scaled(5))
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b'"code":"invalid_request"' in answer
    # A body larger than the limit is refused from its Content-Length, before it is read.
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    writer.write(
        b"POST /api/rooms/x/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 99999999\r\n\r\n"
    )
    answer = await asyncio.wait_for(reader.read(), scaled(5))
    writer.close()
    assert answer.startswith(b"HTTP/1.1 413 ")
    status, _ = http_get(f"http://127.0.0.1:{node.port}/api/openapi.json")
    assert status == 200


async def test_keep_alive_serves_several_requests_on_one_connection(
    api_cluster: LocalCluster,
) -> None:
    node = api_cluster.nodes[0]
    room = new_room()
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    one = f"GET /api/rooms/{room}/presence HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    writer.write(one + one)  # pipelined: answered in order
    answers = b""
    async with asyncio.timeout(scaled(5)):
        while answers.count(b"HTTP/1.1 200 OK") < 2:
            answers += await reader.read(65536)
    writer.close()
    assert answers.count(b'"type":"presence"') == 2


@pytest.fixture(scope="module")
def secured_cluster() -> Iterator[LocalCluster]:
    env = {
        **FAST_ENV,
        "ROOMCAST_AUTH_SECRET": SECRET,
        "ROOMCAST_API_KEYS": API_KEY,
        "ROOMCAST_API_RATE_PER_SECOND": "0.5",
        "ROOMCAST_API_RATE_BURST": "3",
    }
    with LocalCluster(1, node_env=env) as running:
        yield running


async def test_credentials_rooms_claim_and_rate_limit(secured_cluster: LocalCluster) -> None:
    cluster = secured_cluster
    room = "team-" + uuid.uuid4().hex[:8]
    url = api(cluster, room, "messages")
    message = {"text": "hello", "username": "mallory"}
    anonymous = await request("POST", url, json_body=message)
    assert anonymous.status == 401 and anonymous.json()["code"] == "token_missing"
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    wrong = await request("POST", url, json_body=message, headers={"X-API-Key": "nope"})
    # With tokens on, what is not one of the keys is read as a token (docs/protocol.md's codes).
    assert wrong.status == 401 and wrong.json()["code"] == "token_invalid"

    # An API key: a backend service names the author.
    listener = await Client.connect(
        cluster.url + "?token=" + issue_token(SECRET, "u1", name="listener", rooms=["team-*"])
    )
    try:
        await listener.send(type="join", room=room)
        await listener.recv_type("joined")
        by_key = await request(
            "POST", url, json_body={"text": "deployed"},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )  # fmt: skip
        assert by_key.status == 400 and by_key.json()["code"] == "invalid_username"
        by_key = await request(
            "POST", url, json_body={"text": "deployed", "username": "ci"},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )  # fmt: skip
        assert by_key.status == 201
        posted = await listener.recv_type("message")
        assert posted["username"] == "ci" and "user_id" not in posted  # no user wrote it

        # A user token: the token names the author, whatever the body says; rooms claim applies.
        token = issue_token(SECRET, "u2", name="alice", rooms=["team-*"])
        by_user = await request(
            "POST", url, json_body=message, headers={"Authorization": f"Bearer {token}"}
        )
        assert by_user.status == 201
        posted = await listener.recv_type("message")
        assert posted["username"] == "alice"
        # The author's user_id, the one its WebSockets carry (docs/protocol.md "User ids").
        as_alice = await Client.connect(f"{cluster.url}?token={token}")
        await as_alice.close()
        assert posted["user_id"] == as_alice.welcome["user_id"]
        other_room = await request(
            "GET", api(cluster, "private", "history"), headers={"Authorization": f"Bearer {token}"}
        )
        assert other_room.status == 403 and other_room.json()["code"] == "forbidden"
        expired = issue_token(SECRET, "u3", ttl=-120)
        late = await request("GET", api(cluster, room, "presence") + f"?token={expired}")
        assert late.status == 401 and late.json()["code"] == "token_expired"

        # A handshake whose query has too many fields is refused at once, not left hanging:
        # malformed (400), before any token is looked for.
        with pytest.raises(InvalidStatus) as refused:
            await Client.connect(cluster.url + "?" + "&".join(["a=1"] * 40))
        assert refused.value.response.status_code == 400

        # Burst of 3 for this caller, then 429 with Retry-After.
        statuses = []
        for _ in range(4):
            answer = await request(
                "GET", api(cluster, room, "presence"), headers={"X-API-Key": API_KEY}
            )
            statuses.append(answer.status)
            if answer.status == 429:
                assert answer.headers["retry-after"] == "2"
                assert answer.json()["code"] == "rate_limited"
        assert 429 in statuses
    finally:
        await listener.close()


async def test_a_key_not_in_the_list_is_api_key_invalid_on_a_node_without_tokens() -> None:
    env = {**FAST_ENV, "ROOMCAST_API_KEYS": API_KEY}
    with LocalCluster(1, redis=False, nginx=False, node_env=env) as cluster:
        url = f"http://127.0.0.1:{cluster.nodes[0].port}/api/rooms/r/history"
        wrong = await request("GET", url, headers={"X-API-Key": "not-one-of-the-keys-0123456789"})
        assert (wrong.status, wrong.json()["code"]) == (401, "api_key_invalid")
        right = await request("GET", url, headers={"X-API-Key": API_KEY})
        assert right.status == 200


async def test_broker_down_gives_503_and_recovers(fresh_api_cluster: LocalCluster) -> None:
    cluster = fresh_api_cluster
    room = new_room()
    cluster.kill_redis()
    deadline = time.monotonic() + scaled(20)
    answer = await request("POST", api(cluster, room, "messages"),
                           json_body={"text": "x", "username": "y"})  # fmt: skip
    while answer.status != 503 and time.monotonic() < deadline:
        answer = await request("POST", api(cluster, room, "messages"),
                               json_body={"text": "x", "username": "y"})  # fmt: skip
    assert answer.status == 503 and answer.json()["code"] == "unavailable"
    # Refused 503 by a node that knows Redis is gone; one of the others, which may not have
    # noticed yet (the 503 above came from one of three), answers 200 and then says so in the
    # stream before ending it.
    stream = await EventStream.open(api(cluster, room, "events"))
    if stream.status == 200:
        told = (await stream.next(timeout=scaled(10))).data
        assert (told["type"], told["code"]) == ("error", "unavailable"), told
    else:
        assert stream.status == 503
    stream.close()
    cluster.start_redis()
    while time.monotonic() < deadline:
        answer = await request("POST", api(cluster, room, "messages"),
                               json_body={"text": "x", "username": "y"})  # fmt: skip
        if answer.status == 201:
            break
        await asyncio.sleep(0.2)  # polling readiness: no event to await across processes
    assert answer.status == 201


async def test_draining_node_ends_streams_cleanly(fresh_api_cluster: LocalCluster) -> None:
    cluster = fresh_api_cluster
    room = new_room()
    node = cluster.nodes[0]
    stream = await EventStream.open(f"http://127.0.0.1:{node.port}/api/rooms/{room}/events")
    await stream.next_type("joined")
    node.process.signal(signal.SIGTERM)
    with pytest.raises(EOFError):
        await stream.next(timeout=10)
    assert stream.ended
    stream.close()


async def test_a_request_trickled_in_too_slowly_is_cut_off() -> None:
    """Slowloris on the API: neither an unfinished head nor an unfinished body holds a
    connection past ROOMCAST_HANDSHAKE_TIMEOUT; an idle keep-alive one goes after
    ROOMCAST_HTTP_IDLE_TIMEOUT."""
    env = {**API_ENV, "ROOMCAST_HANDSHAKE_TIMEOUT": "0.5", "ROOMCAST_HTTP_IDLE_TIMEOUT": "1"}
    with LocalCluster(1, redis=False, nginx=False, node_env=env) as single:
        port = single.nodes[0].port
        for partial, answered in (
            # A head never finished: closed silently (no request to answer).
            (b"GET /api/rooms/r/presence HTTP/1.1\r\nHost: x\r\n", b""),
            # A body never finished: answered 408, so that nginx does not take the silence
            # for a lost answer (tests/adversarial/test_breakrt17_stalled_bodies.py).
            (
                b"POST /api/rooms/r/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                b"\r\nContent-Length: 100\r\n\r\n{",
                b"HTTP/1.1 408 ",
            ),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(partial)
            started = time.monotonic()
            received = await asyncio.wait_for(reader.read(), scaled(5))  # then closed
            assert received.startswith(answered) and bool(received) == bool(answered), received
            assert time.monotonic() - started < scaled(3)
            writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/rooms/r/presence HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), scaled(5))  # then idle: closed
        assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"]}")
        writer.close()
