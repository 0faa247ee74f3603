"""Who the chat page says is here, and which messages it says are the reader's own.

A username is a display name: in open mode anyone types any name, and two tokens may both say
"Alice". The page keyed its presence list by name (two people called alice were one "alice" of
2 connections) and kept it up to date from user_joined/user_left alone (a big room's
presence_changed was ignored). Its own messages are told by user_id, and by their
acknowledgement where an echo has none (a node of the previous release, met during a rolling
upgrade).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from roomcast_dev.devcluster import LocalCluster, timeout_factor

from tests.support.chatpage import ChatPage, State, new_room, open_on_distinct_nodes
from tests.support.cluster import FAST_ENV
from tests.support.previous_release import export_previous_release, start_old
from tests.support.roommember import member

pytestmark = pytest.mark.integration


def people(page: ChatPage) -> list[State]:
    """The page's presence list: {username, userId, connections, you}, in the order shown."""
    listed: list[State] = page.state()["presence"]
    return listed


def names(page: ChatPage) -> list[str]:
    """The names the reader sees listed, in order (a namesake once each)."""
    return page.texts("#presence .member .name")


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield export_previous_release(tmp_path_factory.mktemp("previous-release"))


def test_namesakes_in_one_room_are_two_people(
    cluster: LocalCluster, pages: tuple[ChatPage, ChatPage]
) -> None:
    """Two people both called alice (open mode), on different nodes: on main each page listed
    one "alice" of 2 connections and counted 1 here."""
    first, second = pages
    open_on_distinct_nodes(first, second, cluster.http_url, new_room(), ("alice", "alice"))
    for page in pages:
        page.wait_until("two people", lambda p: names(p) == ["alice", "alice"])
        listed = people(page)
        assert [person["username"] for person in listed] == ["alice", "alice"]
        assert len({person["userId"] for person in listed}) == 2
        assert [p["userId"] for p in listed if p["you"]] == [page.state()["userId"]]
        assert all(person["connections"] == 1 for person in listed)
        assert page.text_of("presence-count") == "2"
        assert len(page.texts("#presence .member.self")) == 1
        # Each row shows the start of its user id, so the reader can tell them apart.
        tags = page.texts("#presence .member .tag")
        assert sorted(tags) == sorted(f" #{p['userId'][:4]}" for p in listed)

    second.say("hello from the other alice")
    first.wait_until("the message", lambda p: p.message_texts() == ["hello from the other alice"])
    second.wait_until("its echo", lambda p: p.message_texts() == ["hello from the other alice"])
    assert first.texts("#log .message.own .text") == []
    assert second.texts("#log .message.own .text") == ["hello from the other alice"]

    second.blank()  # the other alice leaves: the one left is the reader
    first.wait_until("one person", lambda p: names(p) == ["alice"])
    (left,) = people(first)
    assert left["you"] and left["userId"] == first.state()["userId"]
    assert first.text_of("presence-count") == "1"
    assert "alice left." in first.texts("#log .notice .text")


def test_a_big_room_s_list_follows_its_counted_joins_and_leaves(
    pages: tuple[ChatPage, ChatPage],
) -> None:
    """From 3 connections the room is big: joins and leaves come as presence_changed counts,
    not names. On main the page ignored them: it listed 3 of the 5 people here, and kept listing
    them after they left."""
    page = pages[0]
    room = new_room()
    env = dict(FAST_ENV, ROOMCAST_BIG_ROOM_MEMBERS="3", ROOMCAST_BIG_ROOM_INTERVAL="0.2")
    with LocalCluster(1, node_env=env) as cluster:
        page.open(cluster.http_url, room, "watcher").wait_joined()
        everyone = ["m1", "m2", "m3", "m4", "watcher"]
        with contextlib.ExitStack() as members:
            for name in everyone[:-1]:
                members.enter_context(member(cluster.url, room, name))
            page.wait_until("all five", lambda p: names(p) == everyone)
            assert page.text_of("presence-count") == "5"
        page.wait_until("only the watcher", lambda p: names(p) == ["watcher"], timeout=20)
        assert page.text_of("presence-count") == "1"


def test_own_messages_through_a_previous_release_node_stay_own(
    previous_release: Path, pages: tuple[ChatPage, ChatPage]
) -> None:
    """A rolling upgrade: the page met this release (it knows its user_id), then its node is
    replaced on the same port by one of the previous release, whose echoes carry no user_id.
    On main the page showed its own messages there as someone else's; its acks now mark them.
    That node's presence has no user ids: the page still lists everyone, and itself as "(you)"."""
    carol, dave = pages
    room = new_room()
    with LocalCluster(1, node_env=FAST_ENV) as cluster:
        (node,) = cluster.nodes
        carol.open(cluster.http_url, room, "carol").wait_joined()
        carol.say("on this release")
        carol.wait_until("own", lambda p: p.texts("#log .message.own .text") == ["on this release"])

        node.process.signal(signal.SIGTERM)
        assert node.process.popen.wait(15 * timeout_factor()) == 0
        older = start_old(cluster, previous_release, node.port)
        carol.wait_until(
            "rejoined on the previous release",
            lambda p: (s := p.state())["synced"] and s["node"] == older.node_id,
            timeout=40,
        )
        dave.open(cluster.http_url, room, "dave").wait_joined()
        carol.say("on the previous release")
        dave.say("from dave")
        expected = ["on this release", "on the previous release", "from dave"]
        for page in (carol, dave):
            page.wait_until("three messages", lambda p: p.message_texts() == expected)
        carol.wait_until("an empty outbox", lambda p: p.state()["outbox"] == [])
        assert carol.texts("#log .message.own .text") == expected[:2]
        assert dave.texts("#log .message.own .text") == ["from dave"]

        for page, me in ((carol, "carol"), (dave, "dave")):
            page.wait_until("both listed", lambda p: names(p) == ["carol", "dave"])
            assert [p["username"] for p in people(page) if p["you"]] == [me]
            assert {p["userId"] for p in people(page)} == {None}
            assert page.text_of("presence-count") == "2"


def test_a_page_left_for_another_leaves_the_room(
    cluster: LocalCluster, pages: tuple[ChatPage, ChatPage]
) -> None:
    """Chromium kept the WebSocket of a page navigated away from open (the back/forward cache)
    and answered the server's pings for it: on main the reader stayed listed in the room (no
    user_left in 90 s). Coming back with the Back button joins again."""
    page = pages[0]
    room = new_room()
    page.open(cluster.http_url, room, "wanderer").wait_joined()
    with member(cluster.url, room, "stayer") as stayer:
        page.wait_until("both listed", lambda p: names(p) == ["stayer", "wanderer"])
        page.driver.get("about:blank")
        left = stayer.next_event("user_left")
        assert left["username"] == "wanderer"
        page.driver.back()
        joined = stayer.next_event("user_joined")
        assert joined["username"] == "wanderer"
        page.wait_until("listed again", lambda p: names(p) == ["stayer", "wanderer"])
        assert page.wait_joined()["status"] == "connected"
