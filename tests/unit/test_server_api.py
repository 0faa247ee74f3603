"""The server API without I/O: its routes and bodies, the control orders, the Lua scripts' JSON
tied to roomcast.wire, room tokens, and the node carrying orders out on real Connections fed by a
sans-I/O client over the in-memory broker."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from roomcast.broker import HistoryLimits, NotInHistory, RoomBanned, scripts
from roomcast.broker.memory import MemoryBroker
from roomcast.core.auth import AuthError, TokenVerifier, issue_token
from roomcast.core.node import Node
from roomcast.core.server_api import ServerApi
from roomcast.net.transport import WebSocketServer
from roomcast.runtime.metrics import Metrics
from roomcast.wire import api, control, protocol
from roomcast.wire.api import ApiError, Endpoint
from roomcast.wire.codes import CloseCode
from tests.support.wsharness import INSTANCE, WsClient, make_settings, settle
from tests.unit.test_scripts_wire import lua_concat

SECRET = "a-secret-for-the-server-api-unit-tests-0123"

# Routes and bodies


@pytest.mark.parametrize(
    ("method", "target", "endpoint", "room", "user", "offset"),
    [
        ("POST", "/api/users/u%3A1%20x/disconnect", Endpoint.DISCONNECT, None, "u:1 x", None),
        ("POST", "/api/rooms/r/members/ann/remove", Endpoint.REMOVE_MEMBER, "r", "ann", None),
        ("PUT", "/api/rooms/r/bans/ann", Endpoint.BAN, "r", "ann", None),
        ("DELETE", "/api/rooms/r/bans/ann", Endpoint.UNBAN, "r", "ann", None),
        ("GET", "/api/rooms/r/bans", Endpoint.LIST_BANS, "r", None, None),
        ("DELETE", "/api/rooms/r/messages/17", Endpoint.DELETE_MESSAGE, "r", None, 17),
        ("DELETE", "/api/rooms/r/messages", Endpoint.CLEAR_HISTORY, "r", None, None),
        ("POST", "/api/rooms/r/messages", Endpoint.POST_MESSAGE, "r", None, None),
        ("POST", "/api/broadcast", Endpoint.BROADCAST, None, None, None),
        ("GET", "/api/rooms?limit=5&cursor=abc", Endpoint.LIST_ROOMS, None, None, None),
        ("HEAD", "/api/cluster", Endpoint.CLUSTER, None, None, None),
    ],
)
def test_every_server_api_route(
    method: str,
    target: str,
    endpoint: Endpoint,
    room: str | None,
    user: str | None,
    offset: int | None,
) -> None:
    route = api.route(method, target)
    assert (route.endpoint, route.room, route.user, route.offset) == (endpoint, room, user, offset)


@pytest.mark.parametrize(
    ("method", "target", "status", "code"),
    [
        ("GET", "/api/rooms/r/messages/17", 405, "method_not_allowed"),
        ("PATCH", "/api/rooms/r/messages", 405, "method_not_allowed"),
        ("DELETE", "/api/rooms/r/messages/0", 404, "not_found"),
        ("DELETE", "/api/rooms/r/messages/-1", 404, "not_found"),
        ("DELETE", "/api/rooms/r/messages/99999999999999999", 404, "not_found"),
        ("POST", "/api/users/%00/disconnect", 404, "invalid_user"),
        ("POST", "/api/users//disconnect", 404, "invalid_user"),
        ("POST", f"/api/users/{'x' * 129}/disconnect", 404, "invalid_user"),
        ("PUT", "/api/rooms/bad%20room/bans/ann", 404, "invalid_room"),
        ("GET", "/api/users/ann", 404, "not_found"),
    ],
)
def test_bad_server_api_targets(method: str, target: str, status: int, code: str) -> None:
    with pytest.raises(ApiError) as refused:
        api.route(method, target)
    assert (refused.value.status, refused.value.code) == (status, code)


def test_405_names_every_method_of_the_path() -> None:
    with pytest.raises(ApiError) as refused:
        api.route("GET", "/api/rooms/r/messages")
    assert dict(refused.value.headers)["Allow"] == "POST, DELETE"


TOO_MANY_ROOMS = orjson.dumps(["r"] * 101)


def test_bodies() -> None:
    json = "application/json"
    assert api.parse_disconnect(None, b"") == ("disconnected by the application", True)
    assert api.parse_disconnect(json, b'{"reason":"bye","reconnect":false}') == ("bye", False)
    assert api.parse_remove(json, b"{}") == "removed by the application"
    assert api.parse_ban(json, b'{"seconds":60.0,"reason":"spam"}') == (60, "spam")
    broadcast = api.parse_broadcast(json, b'{"rooms":["a","b","a"],"text":"t","username":"ops"}')
    assert broadcast.rooms == ("a", "b")  # once each
    refusals = [
        (api.parse_disconnect, b'{"reconnect":"yes"}', "invalid_body"),
        (api.parse_remove, b'{"reason":' + orjson.dumps("x" * 257) + b"}", "invalid_body"),
        (api.parse_ban, b"{}", "invalid_body"),
        (api.parse_ban, b'{"seconds":0}', "invalid_body"),
        (api.parse_ban, b'{"seconds":true}', "invalid_body"),
        (api.parse_ban, b"[]", "invalid_frame"),
        (api.parse_broadcast, b'{"rooms":[],"text":"t"}', "invalid_room"),
        (api.parse_broadcast, b'{"rooms":["bad room"],"text":"t"}', "invalid_room"),
        (api.parse_broadcast, b'{"rooms":' + TOO_MANY_ROOMS + b',"text":"t"}', "invalid_room"),
    ]  # fmt: skip
    for parse, body, code in refusals:
        with pytest.raises(ApiError) as refused:
            parse(json, body)
        assert refused.value.code == code, body
    with pytest.raises(ApiError) as refused:
        api.parse_ban("text/plain", b'{"seconds":1}')
    assert refused.value.status == 415


def test_rooms_page_query() -> None:
    assert api.rooms_page(api.route("GET", "/api/rooms")) == (100, None)
    assert api.rooms_page(api.route("GET", "/api/rooms?limit=2&cursor=r-1")) == (2, "r-1")
    for query in ("limit=0", "limit=1001", "limit=x", "cursor=", "cursor=bad%20name"):
        with pytest.raises(ApiError):
            api.rooms_page(api.route("GET", f"/api/rooms?{query}"))


# Control orders and direct rooms


def test_control_orders_round_trip_and_refuse_strangers() -> None:
    orders: list[control.ControlEvent] = [
        control.Disconnect("u1", "bye", reconnect=False),
        control.Remove("r", "u1", "off topic"),
        control.Remove("r", "u1", "spam", until_ms=1_700_000_000_000),
    ]
    for order in orders:
        assert control.parse(control.encode(order)) == order
    for payload in (b"nope", b"[]", b'{"type":"x","user":"u","reason":""}', b'{"type":"remove"}'):
        with pytest.raises(control.ControlError):
            control.parse(payload)


def test_direct_rooms() -> None:
    assert control.direct_room("bob", "ann") == control.direct_room("ann", "bob") == "dm:ann:bob"
    assert control.direct_room_members("dm:ann:bob") == ("ann", "bob")
    for room in ("general", "dm:ann", "dm::bob", "dm:a:b:c"):
        assert control.direct_room_members(room) is None


# The scripts' JSON is the protocol's


def _lua_assignment(source: str, name: str) -> str:
    start = source.index(f"local {name} = ") + len(f"local {name} = ")
    end = source.index("\n", source.index("\n", start) + 1)  # the assignment spans two lines
    return " ".join(source[start:end].split("\n"))


def test_delete_and_clear_scripts_build_the_protocols_events() -> None:
    values = {"ARGV[3]": "lobby", "offset": "42", "epoch": "e-1", "latest": "50"}
    source = scripts.DELETE_MESSAGE.source
    assert lua_concat(_lua_assignment(source, "tombstone"), values) == protocol.tombstone(
        "lobby", 42, "e-1"
    )
    assert lua_concat(_lua_assignment(source, "event"), values) == protocol.message_deleted(
        "lobby", "e-1", 42
    )
    cleared = lua_concat(_lua_assignment(scripts.CLEAR_HISTORY.source, "event"), values)
    assert cleared == protocol.history_cleared("lobby", "e-1", 50)


# Room tokens


def test_room_tokens_grant_one_room_and_are_no_connection_tokens() -> None:
    verifier = TokenVerifier(secret=SECRET)
    grant = verifier.verify_room(issue_token(SECRET, "ann", room="dm:ann:bob", role="owner"))
    assert (grant.subject, grant.room, grant.role) == ("ann", "dm:ann:bob", "owner")
    with pytest.raises(AuthError) as refused:
        verifier.verify(issue_token(SECRET, "ann", room="dm:ann:bob"))
    assert refused.value.code == "token_invalid"
    for bad in (
        issue_token(SECRET, "ann"),  # a connection token: no room
        issue_token(SECRET, "ann", room="r", ttl=-120),
        issue_token("another-secret-0123456789abcdef0123", "ann", room="r"),
        issue_token(SECRET, "ann", room="r", role="x" * 65),
    ):
        with pytest.raises(AuthError):
            verifier.verify_room(bad)


# The in-memory broker keeps the Redis broker's promises


async def test_memory_broker_deletes_clears_and_bans() -> None:
    published: list[tuple[str, bytes]] = []
    broker = MemoryBroker(lambda room, payload: published.append((room, payload)))
    await broker.start()
    await broker.subscribe("r")
    for text in ("a", "b", "c"):
        await broker.post_message("r", b"", protocol.chat_message_prefix("r", "u", text, 1))
    epoch = await broker.delete_message("r", 2)
    kept = [orjson.loads(m) for m in (await broker.history("r", 10)).messages]
    assert kept[1] == orjson.loads(protocol.tombstone("r", 2, epoch))
    assert [m.get("text") for m in kept] == ["a", None, "c"]
    for offset in (0, 4):
        with pytest.raises(NotInHistory):
            await broker.delete_message("r", offset)
    assert await broker.clear_history("r") == (epoch, 3)
    assert (await broker.history("r", 10)).messages == []
    assert (await broker.post_message("r", b"", protocol.chat_message_prefix("r", "u", "d", 1)))[
        1
    ] == 4
    until = await broker.ban("r", "u1", 60, "spam")
    with pytest.raises(RoomBanned) as refused:
        await broker.join("r", "c1", "name", None, b"", "u1")
    assert (refused.value.until_ms, refused.value.reason) == (until, "spam")
    assert [b.user for b in await broker.bans("r")] == ["u1"]
    assert await broker.unban("r", "u1")
    await broker.join("r", "c1", "name", None, b"", "u1")
    await broker.join("s", "c2", "other", None, b"", "u2")
    page, cursor = await broker.active_rooms(1, None)
    assert ([(c.room, c.members, c.connections) for c in page], cursor) == ([("r", 1, 1)], "r")
    page, cursor = await broker.active_rooms(1, cursor)
    assert ([c.room for c in page], cursor) == (["s"], None)


# The node carries the orders out


class Orders:
    """A node on the memory broker, whose control orders come back to it as from Redis."""

    def __init__(self, node: Node, broker: MemoryBroker, server: WebSocketServer) -> None:
        self.node, self.broker, self.server = node, broker, server
        self.api = ServerApi(broker, node.metrics)

    async def client(self, username: str, *rooms: str) -> WsClient:
        client = WsClient(self.server)
        for room in rooms:
            client.send_json({"type": "join", "room": room, "username": username})
        await settle()
        client.events()
        return client

    async def order(self, method: str, target: str, body: dict[str, Any] | None = None) -> Any:
        route = api.route(method, target)
        data = b"" if body is None else orjson.dumps(body)
        answer = await self.api.handle(route, "application/json", data)
        await settle()
        return answer.value


def drain(*clients: WsClient) -> None:
    for client in clients:
        client.events()


@pytest.fixture
async def orders() -> Orders:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    settings = make_settings()
    node = Node(
        settings.node_id, settings.max_rooms_per_connection, settings.max_frame_bytes, metrics
    )
    broker = MemoryBroker(
        node.on_broker_message, limits=HistoryLimits(), on_control=node.on_control
    )
    await broker.start()
    server = WebSocketServer(node, settings, metrics, asyncio.get_running_loop(), INSTANCE)
    node.attach(broker, server.outbox)
    return Orders(node, broker, server)


async def test_disconnect_closes_the_users_connections_only(orders: Orders) -> None:
    ann1, ann2 = await orders.client("ann", "r"), await orders.client("ann", "s")
    bob = await orders.client("bob", "r")
    drain(ann1, ann2, bob)
    told = await orders.order("POST", "/api/users/ann/disconnect", {"reason": "bye"})
    assert told == {"user": "ann", "nodes_told": 1}
    for client in (ann1, ann2):
        assert client.events()[0] == {"type": "disconnect", "reason": "bye", "reconnect": True}
        assert (client.close_code, client.close_reason) == (CloseCode.DISCONNECTED, "bye")
    assert bob.close_code is None
    await orders.order(
        "POST", "/api/users/bob/disconnect", {"reason": "x" * 200, "reconnect": False}
    )
    assert bob.close_code == CloseCode.DISCONNECTED_FOR_GOOD
    assert bob.close_reason == "x" * 123  # a close frame's reason is at most 123 bytes


async def test_remove_and_ban_take_the_user_out_and_bans_refuse_joins(orders: Orders) -> None:
    ann, bob = await orders.client("ann", "r", "s"), await orders.client("bob", "r")
    drain(ann, bob)
    await orders.order("POST", "/api/rooms/r/members/ann/remove", {"reason": "off topic"})
    assert ann.events() == [{"type": "removed", "room": "r", "reason": "off topic"}]
    assert bob.events() == [{"type": "user_left", "room": "r", "username": "ann"}]
    ann.send_json({"type": "message", "room": "r", "text": "hi?"})
    await settle()
    assert ann.events()[0]["code"] == "not_joined"
    ban = await orders.order("PUT", "/api/rooms/s/bans/ann", {"seconds": 60, "reason": "spam"})
    assert ban["until"] > time.time() * 1000
    assert ann.events() == [
        {"type": "banned", "room": "s", "reason": "spam", "until": ban["until"]}
    ]
    ann.send_json({"type": "join", "room": "s", "username": "ann", "id": 7})
    await settle()
    (refused,) = ann.events()
    assert (refused["code"], refused["id"]) == ("banned", 7)
    assert (await orders.order("GET", "/api/rooms/s/bans"))["bans"][0]["user"] == "ann"
    await orders.order("DELETE", "/api/rooms/s/bans/ann")
    ann.send_json({"type": "join", "room": "s", "username": "ann"})
    await settle()
    assert ann.events()[0]["type"] == "joined"


async def test_delete_and_clear_reach_members_and_history(orders: Orders) -> None:
    ann = await orders.client("ann", "r")
    for text in ("one", "two"):
        ann.send_json({"type": "message", "room": "r", "text": text})
    await settle()
    epoch = ann.events()[0]["epoch"]
    assert await orders.order("DELETE", "/api/rooms/r/messages/1") == {
        "room": "r",
        "epoch": epoch,
        "offset": 1,
    }
    assert ann.events() == [{"type": "message_deleted", "room": "r", "epoch": epoch, "offset": 1}]
    with pytest.raises(ApiError) as refused:
        await orders.order("DELETE", "/api/rooms/r/messages/9")
    assert (refused.value.status, refused.value.code) == (404, "not_in_history")
    ann.send_json({"type": "history", "room": "r"})
    await settle()
    (history,) = ann.events()
    assert history["messages"][0] == orjson.loads(protocol.tombstone("r", 1, epoch))
    cleared = await orders.order("DELETE", "/api/rooms/r/messages")
    assert cleared == {"room": "r", "epoch": epoch, "up_to_offset": 2}
    assert ann.events() == [
        {"type": "history_cleared", "room": "r", "epoch": epoch, "up_to_offset": 2}
    ]
    results = await orders.order(
        "POST", "/api/broadcast", {"rooms": ["r", "s"], "text": "hi", "username": "ops"}
    )
    assert [(r["room"], r["offset"]) for r in results["results"]] == [("r", 3), ("s", 1)]
    assert (await orders.order("GET", "/api/rooms"))["rooms"] == [
        {"room": "r", "members": 1, "connections": 1}
    ]


def test_the_token_command_issues_room_tokens(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from roomcast import cli

    monkeypatch.setenv("ROOMCAST_AUTH_SECRET", SECRET)
    assert cli.main(["token", "ann", "--grant", "dm:ann:bob", "--role", "owner"]) == 0
    grant = TokenVerifier(secret=SECRET).verify_room(capsys.readouterr().out.strip())
    assert (grant.subject, grant.room, grant.role) == ("ann", "dm:ann:bob", "owner")
