"""Red team: a direct room (`dm:<a>:<b>`) is its two users' alone, over every surface.

docs/security.md: "the node lets only connections whose `sub` is `a` or `b` into such a room,
whatever their `rooms` claim or room token says (so `rooms: ["*"]` does not open other people's
conversations)". Over WebSocket the join is refused; the HTTP API's history, presence, event
stream and post checked only the token's `rooms` claim, so a third user whose token allows
every room (no `rooms` claim, or `["*"]`) read and wrote ann and bob's conversation.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.adversarial.devcluster_shim import LocalCluster
from tests.adversarial.httpraw import EventStreamReader, http
from tests.adversarial.rawws import RawWebSocket
from tests.adversarial.readiness import until_ready
from tests.adversarial.tokens import SECRET, sign


@pytest.fixture(scope="module")
def secure() -> Iterator[Any]:
    with LocalCluster(1, nginx=False, node_env={"ROOMCAST_AUTH_SECRET": SECRET}) as running:
        yield running


def _bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


@pytest.mark.parametrize("rooms", [None, ["*"]], ids=["no-rooms-claim", "rooms-star"])
async def test_a_third_user_cannot_read_or_write_a_direct_room_over_http(
    secure: Any, rooms: list[str] | None
) -> None:
    port = secure.nodes[0].port
    await until_ready(secure.nodes[0])
    tag = uuid.uuid4().hex[:6]
    ann, bob = f"ann{tag}", f"bob{tag}"
    room = f"dm:{ann}:{bob}"
    # ann speaks in her own direct room: something for an eavesdropper to read.
    ws = await RawWebSocket.connect(
        "127.0.0.1", port, f"/chat?token={sign(sub=ann, name=ann, rooms=['dm:*'])}"
    )
    try:
        await ws.send({"type": "join", "room": room})
        await ws.next_text(type="joined", room=room)
        await ws.send({"type": "message", "text": "secret", "id": 1})
        await ws.next_text(type="ack", id=1)
    finally:
        await ws.close()

    eve = sign(sub=f"eve{tag}", name=f"eve{tag}", rooms=rooms)
    # The WebSocket refuses her: the documented rule.
    ws = await RawWebSocket.connect("127.0.0.1", port, f"/chat?token={eve}")
    try:
        await ws.send({"type": "join", "room": room})
        refused = await ws.next_text(type="error")
        assert refused["code"] == "forbidden", refused
    finally:
        await ws.close()

    base = f"/api/rooms/{room}"
    history = await http(port, "GET", f"{base}/history", headers=_bearer(eve))
    presence = await http(port, "GET", f"{base}/presence", headers=_bearer(eve))
    posted = await http(
        port, "POST", f"{base}/messages", headers=_bearer(eve), json_body={"text": "hi from eve"}
    )
    stream = await EventStreamReader.open(port, f"{base}/events", headers=_bearer(eve))
    stream.close()
    statuses = {
        "history": history.status,
        "presence": presence.status,
        "post": posted.status,
        "events": stream.status,
    }
    leaked = "secret" in history.body.decode(errors="replace")
    figures = f"a third user's answers in {room}: {statuses}; history leaked the text: {leaked}"
    print(figures)
    assert statuses == dict.fromkeys(statuses, 403), figures


async def test_each_of_the_two_users_still_reads_their_direct_room_over_http(secure: Any) -> None:
    """The guard of the fix: the rule must not lock ann out of her own conversation."""
    port = secure.nodes[0].port
    await until_ready(secure.nodes[0])
    tag = uuid.uuid4().hex[:6]
    ann, bob = f"ann{tag}", f"bob{tag}"
    room = f"dm:{ann}:{bob}"
    token = sign(sub=bob, name=bob)
    posted = await http(
        port,
        "POST",
        f"/api/rooms/{room}/messages",
        headers=_bearer(token),
        json_body={"text": "hello ann"},
    )
    history = await http(port, "GET", f"/api/rooms/{room}/history", headers=_bearer(token))
    assert posted.status == 201, posted
    assert history.status == 200, history
    assert [m["text"] for m in history.json()["messages"]] == ["hello ann"]
