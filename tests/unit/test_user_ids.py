"""user_id: users of one name told apart (red team 10), without showing a token's sub."""

from __future__ import annotations

from typing import Any

from roomcast.app import user_ids
from roomcast.client.core import RoomcastClient
from roomcast.client.events import ChatMessage, Typing
from roomcast.core.user_ids import UserIds, key_from_secret
from roomcast.runtime.config import Settings
from tests.support.wsharness import USER_ID, WsClient, settle
from tests.unit.test_node import Env, env  # noqa: F401  # the fixture

SECRET = "9f2c4e7a1b8d3f6e0a5c9b2d7e4f1a8c"


def test_a_subject_has_one_id_per_key_and_it_shows_nothing_of_it() -> None:
    ids = UserIds(b"k" * 32)
    alice = ids.of_subject("alice@example.com")
    assert USER_ID.fullmatch(alice)
    assert alice == UserIds(b"k" * 32).of_subject("alice@example.com")  # every node
    assert alice != ids.of_subject("mallory@example.com")
    assert alice != UserIds(b"j" * 32).of_subject("alice@example.com")
    assert "alice" not in alice


def test_connections_without_a_token_get_ids_of_their_own() -> None:
    first, second = UserIds.anonymous(), UserIds.anonymous()
    assert USER_ID.fullmatch(first) and first != second


def test_the_key_is_its_own_setting_else_derived_from_the_hs256_secret() -> None:
    derived = user_ids(Settings(auth_secret=SECRET)).of_subject("alice")
    assert derived == UserIds(key_from_secret(SECRET.encode())).of_subject("alice")
    assert derived == user_ids(Settings(auth_secret=SECRET)).of_subject("alice")  # every node
    assert derived != UserIds(SECRET.encode()).of_subject("alice")  # not the secret itself
    own = user_ids(Settings(auth_secret=SECRET, user_id_key="u" * 32)).of_subject("alice")
    assert own == UserIds(b"u" * 32).of_subject("alice") != derived
    # Neither (a public key alone): a key of this process, documented and warned about.
    assert user_ids(Settings()).of_subject("alice") != user_ids(Settings()).of_subject("alice")


async def welcomed(env: Env) -> tuple[WsClient, str]:  # noqa: F811
    client = WsClient(env.server)
    await settle()
    [welcome] = client.events(user_ids=True)
    return client, welcome["user_id"]


async def test_every_event_about_a_user_names_it_by_its_user_id(env: Env) -> None:  # noqa: F811
    """Two open-mode users both called alice: each event carries its author's id, the one its
    welcome told it."""
    first, first_id = await welcomed(env)
    second, second_id = await welcomed(env)
    assert first_id != second_id
    first.send_json({"type": "join", "room": "r", "username": "alice"})
    await settle()
    [joined] = first.events(user_ids=True)
    assert joined["type"] == "joined" and joined["user_id"] == first_id
    second.send_json({"type": "join", "room": "r", "username": "alice"})
    await settle()
    second.events()
    second.send_json({"type": "typing", "room": "r"})
    second.send_json({"type": "message", "room": "r", "text": "hi"})
    await settle()
    second.send_json({"type": "history", "room": "r"})
    second.send_json({"type": "leave", "room": "r"})
    await settle()
    about: dict[str, Any] = {e["type"]: e for e in first.events(user_ids=True)}
    for kind in ("user_joined", "typing", "message", "user_left"):
        assert about[kind]["username"] == "alice" and about[kind]["user_id"] == second_id, kind
    history = [e for e in second.events(user_ids=True) if e["type"] == "history"]
    assert history[0]["messages"][0]["user_id"] == second_id


def test_the_python_client_tells_its_own_messages_by_user_id() -> None:
    client = RoomcastClient("ws://127.0.0.1:1/chat", "Alice")
    client._remember_own_id("mine")
    assert client.is_own(ChatMessage("r", "Alice", "x", 0, 1, "ep", user_id="mine"))
    assert not client.is_own(ChatMessage("r", "Alice", "x", 0, 2, "ep", user_id="namesake"))
    assert not client.is_own(ChatMessage("r", "Alice", "x", 0, 3, "ep"))  # posted by the API
    assert not client.is_own(Typing("r", "Alice", "namesake"))
    older_server = RoomcastClient("ws://127.0.0.1:1/chat", "Alice")
    assert older_server.is_own(ChatMessage("r", "Alice", "x", 0, 1, "ep"))


async def test_presence_tells_namesakes_apart_by_the_ids_their_events_carry(
    env: Env,  # noqa: F811
) -> None:
    """Three open-mode connections called alice (each with an id of its own): the presence
    entry of "alice" counts three connections and holds the user_id of each, those of the
    user_joined the watcher saw; a page of presence says the same."""
    watcher, _ = await welcomed(env)
    watcher.send_json({"type": "join", "room": "r", "username": "watcher"})
    await settle()
    watcher.events()
    ids = []
    for _ in range(3):
        alice, alice_id = await welcomed(env)
        alice.send_json({"type": "join", "room": "r", "username": "alice"})
        ids.append(alice_id)
    await settle()
    joins = [e for e in watcher.events(user_ids=True) if e["type"] == "user_joined"]
    assert [e["user_id"] for e in joins] == ids and len(set(ids)) == 3
    watcher.send_json({"type": "presence", "room": "r"})
    watcher.send_json({"type": "presence", "room": "r", "limit": 1})
    await settle()
    whole, page = watcher.events(user_ids=True)
    entry = whole["members"][0]
    assert entry == {"username": "alice", "connections": 3, "user_ids": dict.fromkeys(ids, 1)}
    assert page["members"] == [entry] and page["next"] == "alice"
