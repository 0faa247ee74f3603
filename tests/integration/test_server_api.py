"""The server API (issue 16) through REAL nginx, redis-server and 3 node processes: each order
goes through nginx by the roomcast.admin wrapper, and its effect is seen on all three nodes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from roomcast_dev.devcluster import LocalCluster
from websockets.exceptions import InvalidStatus

from roomcast.admin import AdminError, RoomcastAdmin
from tests.support import serverapi
from tests.support.httpclient import EventStream, request
from tests.support.serverapi import API_ENV, admin_of, all_ready, connect, join, new_name, token
from tests.support.wsclient import Client, scaled

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(3, node_env=API_ENV) as running:
        yield all_ready(running)


async def test_disconnect_closes_the_users_connections_on_every_node(cluster: LocalCluster) -> None:
    await serverapi.check_disconnect(cluster)


async def test_remove_takes_the_user_out_of_the_room_on_every_node(cluster: LocalCluster) -> None:
    await serverapi.check_remove(cluster)


async def test_ban_refuses_joins_on_every_node_until_it_expires_or_is_lifted(
    cluster: LocalCluster,
) -> None:
    await serverapi.check_ban(cluster)


async def test_deleted_message_is_a_tombstone_in_history_recovery_and_sse(
    cluster: LocalCluster,
) -> None:
    await serverapi.check_delete(cluster)


async def test_clear_history_tells_members_and_offsets_go_on(cluster: LocalCluster) -> None:
    await serverapi.check_clear(cluster)


async def test_broadcast_gives_each_room_its_own_offset(cluster: LocalCluster) -> None:
    await serverapi.check_broadcast(cluster)


async def test_rooms_are_listed_in_pages_with_counts_and_the_cluster_lists_its_nodes(
    cluster: LocalCluster,
) -> None:
    await serverapi.check_rooms_and_cluster(cluster)


async def test_a_user_token_is_refused_on_every_admin_endpoint(cluster: LocalCluster) -> None:
    user_token = token(new_name("u"))
    room = new_name("room")
    calls = [
        ("POST", "/api/users/someone/disconnect"),
        ("POST", f"/api/rooms/{room}/members/someone/remove"),
        ("PUT", f"/api/rooms/{room}/bans/someone"),
        ("DELETE", f"/api/rooms/{room}/bans/someone"),
        ("GET", f"/api/rooms/{room}/bans"),
        ("DELETE", f"/api/rooms/{room}/messages/1"),
        ("DELETE", f"/api/rooms/{room}/messages"),
        ("POST", "/api/broadcast"),
        ("GET", "/api/rooms"),
        ("GET", "/api/cluster"),
    ]
    for method, path in calls:
        answer = await request(
            method, cluster.http_url + path, headers={"Authorization": f"Bearer {user_token}"}
        )
        assert answer.status == 403, (method, path, answer.body)
        assert answer.json()["code"] == "forbidden"
        anonymous = await request(method, cluster.http_url + path)
        assert anonymous.status == 401, (method, path)
    with pytest.raises(AdminError) as refused:
        async with RoomcastAdmin(cluster.http_url, "not-a-key", timeout=scaled(10)) as admin:
            await admin.cluster()
    assert refused.value.status == 401


async def test_room_tokens_grant_one_room_to_one_user_until_they_expire(
    cluster: LocalCluster,
) -> None:
    room = new_name("private")
    user = new_name("u")
    client = await connect(cluster.nodes[0], user, rooms=["lobby-*"])
    try:
        assert (await join(client, room))["code"] == "forbidden"  # not in its `rooms`
        granted = token(user, room=room, role="moderator", ttl=60)
        joined = await join(client, room, room_token=granted)
        assert joined["type"] == "joined" and joined["role"] == "moderator", joined
        await client.send(type="leave", room=room)
        await client.recv_type("left", room=room)
        cases = {
            "another user's": (token(new_name("x"), room=room, ttl=60), "forbidden"),
            "another room's": (token(user, room=room + "-2", ttl=60), "forbidden"),
            "an expired": (token(user, room=room, ttl=-120), "invalid_room_token"),
            "a connection token as a": (token(user), "invalid_room_token"),
        }
        for what, (room_token, code) in cases.items():
            refused = await join(client, room, room_token=room_token)
            assert refused["type"] == "error" and refused["code"] == code, (what, refused)
    finally:
        await client.close()
    # A room token is no connection token: as one it would grant every room.
    with pytest.raises(InvalidStatus) as handshake:
        await Client.connect(f"{cluster.nodes[0].url}?token={token(user, room=room, ttl=60)}")
    assert handshake.value.response.status_code == 401


async def test_direct_rooms_are_their_two_users_alone(cluster: LocalCluster) -> None:
    ann, bob, eve = sorted(new_name("dm") for _ in range(3))
    room = f"dm:{ann}:{bob}"
    first = await connect(cluster.nodes[0], ann, rooms=[])
    second = await connect(cluster.nodes[1], bob, rooms=[])
    intruder = await connect(cluster.nodes[2], eve, rooms=["*"])
    try:
        for client, sub in ((first, ann), (second, bob)):
            answer = await join(client, room, room_token=token(sub, room=room, ttl=60))
            assert answer["type"] == "joined", answer
        await first.send(type="message", room=room, text="psst")
        assert (await second.recv_type("message", room=room))["text"] == "psst"
        # Even a token allowing every room, even with a room token for it: not a third user.
        assert (await join(intruder, room))["code"] == "forbidden"
        forged = await join(intruder, room, room_token=token(eve, room=room, ttl=60))
        assert forged["code"] == "forbidden"
    finally:
        for client in (first, second, intruder):
            await client.close()


async def test_a_ban_refuses_the_banned_users_own_http_requests_about_that_room(
    cluster: LocalCluster,
) -> None:
    """A ban is not only a refused join: the banned user's token cannot post to the room, read
    its history or presence, or stream it over the HTTP API either (which would otherwise be a
    way around the ban); other rooms, other users and API keys are not affected."""
    user, bystander = new_name("u"), new_name("u")
    room, other_room = new_name("room"), new_name("room")

    async def call(method: str, path: str, who: str) -> int:
        headers = {"Authorization": f"Bearer {token(who)}"}
        if method == "POST":
            answer = await request(
                method, cluster.http_url + path, json_body={"text": "hi"}, headers=headers
            )
        else:  # a refused stream is answered at once; an open one would time out here
            answer = await request(method, cluster.http_url + path, headers=headers)
        return answer.status

    reads = [("GET", f"/api/rooms/{room}/history"), ("GET", f"/api/rooms/{room}/presence")]
    post = ("POST", f"/api/rooms/{room}/messages")
    assert await call(*post, user) == 201
    async with admin_of(cluster) as admin:
        await admin.ban(room, user, seconds=600, reason="spam")
        for method, path in [post, *reads, ("GET", f"/api/rooms/{room}/events")]:
            assert await call(method, path, user) == 403, (method, path)
        assert await call("POST", f"/api/rooms/{other_room}/messages", user) == 201
        assert await call(*post, bystander) == 201
        await admin.unban(room, user)
    assert await call(*post, user) == 201


async def test_disconnect_and_ban_end_the_users_event_streams(cluster: LocalCluster) -> None:
    """An order about a user reaches its event streams as it reaches its WebSockets: the
    event, then the end; a banned user's stream cannot be opened again."""
    user, bystander = new_name("u"), new_name("u")
    room = new_name("room")

    async def open_stream(who: str) -> EventStream:
        stream = await EventStream.open(
            f"{cluster.http_url}/api/rooms/{room}/events",
            headers={"Authorization": f"Bearer {token(who)}"},
        )
        assert stream.status == 200
        await stream.next_type("joined")
        return stream

    theirs, others = await open_stream(user), await open_stream(bystander)
    try:
        async with admin_of(cluster) as admin:
            await admin.disconnect(user, reason="bye")
            assert (await theirs.next_type("disconnect")).data["reason"] == "bye"
            with pytest.raises(EOFError):
                await theirs.next(timeout=5)
            theirs.close()
            theirs = await open_stream(user)
            await admin.ban(room, user, seconds=600, reason="spam")
            assert (await theirs.next_type("banned")).data["reason"] == "spam"
            with pytest.raises(EOFError):
                await theirs.next(timeout=5)
            again = await EventStream.open(
                f"{cluster.http_url}/api/rooms/{room}/events",
                headers={"Authorization": f"Bearer {token(user)}"},
            )
            assert again.status == 403
            again.close()
        await others.heartbeat()  # the bystander's stream goes on
        assert not others.ended
    finally:
        theirs.close()
        others.close()
