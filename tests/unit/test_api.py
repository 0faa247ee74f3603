"""The HTTP API's pure parts: routing, validation, SSE framing, stream resume (memory broker)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomcast.broker import HistoryLimits
from roomcast.broker.memory import MemoryBroker
from roomcast.core.node_rooms import NodeRooms
from roomcast.core.rooms import RoomRegistry, TooManyRoomsError
from roomcast.core.streams import StreamHub, StreamSink
from roomcast.net.transport import is_http_api_request
from roomcast.wire import api, envelope, protocol, sse
from roomcast.wire.api import ApiError, Endpoint


@pytest.mark.parametrize(
    ("method", "target", "endpoint", "room"),
    [
        ("POST", "/api/rooms/general/messages", Endpoint.POST_MESSAGE, "general"),
        ("GET", "/api/rooms/a.b:c@d-e_f/presence", Endpoint.PRESENCE, "a.b:c@d-e_f"),
        ("HEAD", "/api/rooms/r/history?limit=3", Endpoint.HISTORY, "r"),
        ("GET", "/api/rooms/r%40x/events", Endpoint.EVENTS, "r@x"),
        ("GET", "/api/openapi.json", Endpoint.OPENAPI, None),
    ],
)
def test_routes(method: str, target: str, endpoint: Endpoint, room: str | None) -> None:
    route = api.route(method, target)
    assert (route.endpoint, route.room) == (endpoint, room)


@pytest.mark.parametrize(
    ("method", "target", "status"),
    [
        ("GET", "/api/rooms/general/messages", 405),
        ("POST", "/api/rooms/general/events", 405),
        ("GET", "/api/rooms/bad room/history", 404),
        ("GET", "/api/rooms/a%2Fb/history", 404),
        ("GET", "/api/rooms/%ff/history", 404),
        ("GET", "/api/rooms/general", 404),
        ("GET", "/api/", 404),
        ("GET", "/api/rooms/r/history?" + "&".join(["x=1"] * 40), 400),
        ("GET", "/api/rooms/r/history?x=" + "a" * 3000, 414),
    ],
)
def test_route_errors(method: str, target: str, status: int) -> None:
    with pytest.raises(ApiError) as refused:
        api.route(method, target)
    assert refused.value.status == status
    body = orjson.loads(refused.value.body())
    assert set(body) == {"code", "reason"}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["GET", "POST", "HEAD", "PUT"]), st.text(max_size=300))
def test_routing_never_fails_otherwise(method: str, path: str) -> None:
    try:
        api.route(method, "/api/" + path)
    except ApiError as exc:
        assert 400 <= exc.status < 500


@pytest.mark.parametrize(
    ("content_type", "body", "code"),
    [
        ("text/plain", b'{"text":"x"}', "unsupported_media_type"),
        ("application/json", b"{", "invalid_json"),
        ("application/json", b"[]", "invalid_frame"),
        ("application/json", b'{"text":1}', "invalid_text"),
        ("application/json", b'{"text":"x","username":"  "}', "invalid_username"),
        ("application/json", b'{"text":"x","username":null}', "invalid_username"),
    ],
)
def test_posted_message_errors(content_type: str, body: bytes, code: str) -> None:
    with pytest.raises(ApiError) as refused:
        api.parse_posted_message(content_type, body)
    assert refused.value.code == code


def test_posted_message() -> None:
    posted = api.parse_posted_message("application/json; charset=utf-8", b'{"text":"hi"}')
    assert (posted.text, posted.username) == ("hi", None)


def test_history_limit() -> None:
    assert api.history_limit(api.route("GET", "/api/rooms/r/history"), 7) == 7
    assert api.history_limit(api.route("GET", "/api/rooms/r/history?limit=10000"), 7) == 10000
    for bad in ("0", "10001", "-1", "1.5", "²", ""):
        with pytest.raises(ApiError):
            api.history_limit(api.route("GET", f"/api/rooms/r/history?limit={bad}"), 7)


def test_sse_framing() -> None:
    assert sse.event(b'{"a":1}', 7) == b'id: 7\ndata: {"a":1}\n\n'
    message = b'{"type":"message","text":"\\"epoch\\":\\"x","offset":7,"epoch":"0f3a9c"}'
    assert sse.event(message, 7) == b"id: 0f3a9c:7\ndata: " + message + b"\n\n"
    tombstone = b'{"type":"message","offset":8,"epoch":"0f3a9c","deleted":true}'
    assert sse.event(tombstone, 8).startswith(b"id: 0f3a9c:8\n")
    assert sse.event(b'{"a":1}') == b'data: {"a":1}\n\n'
    assert sse.event(b"a\nb\r\nc") == b"data: a\ndata: b\ndata: c\n\n"
    assert sse.parse_last_event_id(" 42 ") == (42, None)  # an id from before epochs
    assert sse.parse_last_event_id("0f3a9c:42") == (42, "0f3a9c")
    for bad in (None, "", "x", "-1", "1e3", "²", "9" * 17, ":4", "a b:4", "e" * 65 + ":4", "é:4"):
        assert sse.parse_last_event_id(bad) is None


@pytest.mark.parametrize(
    ("head", "is_api"),
    [
        (b"GET /api/rooms/x/events HTTP/1.1\r\n", True),
        (b"POST /chat HTTP/1.1\r\n", True),
        (b"GET /chat HTTP/1.1\r\n", False),
        (b"GET /ap", None),
        (b"GET /apx HTTP/1.1", False),
        (b"GE", None),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00\x00\x00\x00\x00", False),
    ],
)
def test_request_sniffing(head: bytes, is_api: bool | None) -> None:
    assert is_http_api_request(head) is is_api


class Sink:
    def __init__(self, name: str, subject: str | None = None) -> None:
        self.id = name
        self.subject = subject
        self.pending: list[bytes] = []
        self.written: list[bytes] = []
        self.closed = False

    def write_pending(self) -> int:
        self.written.extend(self.pending)
        count = len(self.pending)
        self.pending = []
        return count

    def end(self) -> None:
        self.closed = True

    async def drained(self) -> bool:
        self.write_pending()  # a client that reads everything at once
        return not self.closed

    def events(self) -> list[tuple[int | None, dict[str, object]]]:
        out = []
        for chunk in self.written:
            if chunk.startswith(b":"):
                continue
            lines = chunk.decode().strip().split("\n")
            event_id = int(lines[0].rpartition(":")[2]) if lines[0].startswith("id: ") else None
            out.append((event_id, orjson.loads(lines[-1][6:])))
        return out


class Pusher:
    def push(self, conn: StreamSink, frame: bytes) -> None:
        conn.pending.append(frame)
        conn.write_pending()


def _message(broker: MemoryBroker, room: str, text: str) -> None:
    prefix = protocol.chat_message_prefix(room, "u", text, 1)
    broker.publish_message(room, envelope.head(0.0), prefix)


async def test_stream_resumes_without_gap_or_duplicate_and_releases_its_room() -> None:
    hub_box: list[StreamHub] = []

    def on_message(room: str, payload: bytes) -> None:
        hub_box[0].deliver(room, envelope.unpack(payload))

    broker = MemoryBroker(on_message, lambda ready: None, HistoryLimits(size=5))
    await broker.start()
    counts: list[int] = []
    hub = StreamHub(5, lambda room: False, counts.append)
    hub_box.append(hub)
    hub.attach(broker, Pusher())
    for i in range(4):
        _message(broker, "r", f"m{i}")
    sink = Sink("s")
    opening = asyncio.ensure_future(hub.open(sink, "r", 2, None))
    await asyncio.sleep(0)
    _message(broker, "r", "during")  # published while the stream opens: once, in order
    start = await opening
    _message(broker, "r", "live")
    await asyncio.sleep(0)
    texts = [e["text"] for _, e in sink.events() if e["type"] == "message"]
    assert texts == ["m2", "m3", "during", "live"]
    assert sink.events()[0][1]["recovered"] is True and start.status == "recovered"
    ids = [i for i, e in sink.events() if e["type"] == "message"]
    assert ids == [3, 4, 5, 6]

    too_old = Sink("old")
    start = await hub.open(too_old, "r", 0, None)
    assert start.status == "too_old"
    other_epoch = Sink("epoch")
    start = await hub.open(other_epoch, "r", 1, "another")
    assert start.status == "epoch_changed"
    assert counts[-1] == 3
    for s in (sink, too_old, other_epoch):
        hub.close(s, "r")
    assert counts[-1] == 0 and not hub.has_room("r")
    await broker.stop()


async def test_orders_about_a_user_end_that_users_streams_only() -> None:
    broker = MemoryBroker(lambda room, payload: None, lambda ready: None, HistoryLimits(size=5))
    await broker.start()
    hub = StreamHub(5, lambda room: False, lambda count: None)
    hub.attach(broker, Pusher())
    theirs_here, theirs_there = Sink("a", "alice"), Sink("b", "alice")
    others = [Sink("c", "bob"), Sink("d", None)]
    for sink, room in [(theirs_here, "r"), (theirs_there, "s"), (others[0], "r"), (others[1], "r")]:
        await hub.open(sink, room, None, None)
    # A remove or ban names the room: only that room's stream of the user ends, after the event.
    assert hub.end_streams_of("alice", b'{"type":"banned"}', "r") == 1
    assert theirs_here.closed and theirs_here.events()[-1][1] == {"type": "banned"}
    assert not theirs_there.closed and not any(s.closed for s in others)
    # A disconnect names no room: every stream of the user.
    assert hub.end_streams_of("alice", b'{"type":"disconnect"}') == 1
    assert theirs_there.closed and not any(s.closed for s in others)
    await broker.stop()


async def test_streams_and_members_share_the_node_room_cap() -> None:
    broker = MemoryBroker(lambda room, payload: None, lambda ready: None, HistoryLimits(size=5))
    await broker.start()
    node_rooms = NodeRooms(2)
    members: RoomRegistry[str] = RoomRegistry(16, node_rooms)
    hub = StreamHub(5, members.has_room, lambda count: None, node_rooms=node_rooms)
    hub.attach(broker, Pusher())
    members.join("alice", "r1", "alice")
    first, shared = Sink("s1"), Sink("s2")
    await hub.open(first, "r2", None, None)
    await hub.open(shared, "r1", None, None)  # a room the members hold: no second place
    assert len(node_rooms) == 2
    # At the cap: a stream of a new room is refused, nothing kept, and so is a member's join.
    assert hub.refusal_of("r3") is not None
    assert hub.refusal_of("r1") is None and hub.refusal_of("r2") is None
    with pytest.raises(TooManyRoomsError, match="this node holds its most rooms"):
        await hub.open(Sink("s3"), "r3", None, None)
    with pytest.raises(TooManyRoomsError):
        members.join("bob", "r3", "bob")
    assert not hub.has_room("r3") and len(node_rooms) == 2
    # A room held by both stays counted until both let go; a stream's room frees its place.
    members.leave("alice", "r1")
    assert len(node_rooms) == 2
    hub.close(shared, "r1")
    assert len(node_rooms) == 1 and hub.refusal_of("r3") is None
    hub.close(first, "r2")
    assert len(node_rooms) == 0
    await broker.stop()


class DroppedSink(Sink):
    """A client that never reads: the node drops it while it waits for it to drain (the close
    of its connection reaches the hub only later)."""

    async def drained(self) -> bool:
        self.closed = True
        return False


async def test_a_resuming_stream_dropped_unread_lets_go_of_its_room() -> None:
    broker = MemoryBroker(lambda room, payload: None, lambda ready: None, HistoryLimits(size=5))
    await broker.start()
    counts: list[int] = []
    node_rooms = NodeRooms(1)
    hub = StreamHub(5, lambda room: False, counts.append, page_bytes=1, node_rooms=node_rooms)
    hub.attach(broker, Pusher())
    for i in range(4):
        _message(broker, "r", f"m{i}")
    dropped = DroppedSink("slow")
    start = await hub.open(dropped, "r", 1, None)  # a page of one message, then the rest
    assert start.status is None and dropped.closed
    assert counts[-1] == 0 and not hub.has_room("r") and len(node_rooms) == 0
    hub.close(dropped, "r")  # its connection's close, later: nothing counted twice
    assert counts[-1] == 0 and len(node_rooms) == 0
    assert hub.refusal_of("another") is None
    await broker.stop()
