"""The chat page in a real headless Chromium against a real cluster (redis, nodes, nginx).

What a person would check by hand: two people on different nodes chat; the page survives its
node being killed and shows every message once, in order; what is typed offline waits and is
delivered; markup in messages is shown, never run. Screenshots land in tests/artifacts/.
"""

from __future__ import annotations

import asyncio
import signal
import struct
import uuid
from pathlib import Path

import pytest
from roomcast_dev.devcluster import LocalCluster, NodeProcess, timeout_factor

from roomcast.core.auth import issue_token
from tests.support import serverapi
from tests.support.chatpage import ChatPage, new_room, open_on_distinct_nodes
from tests.support.cluster import FAST_ENV
from tests.support.roommember import member

pytestmark = pytest.mark.integration

MARKUP = '<img src=x onerror="window.__pwned = 1">'
SCRIPT = "<script>window.__pwned = 2</script>"


def kill(node: NodeProcess) -> None:
    node.process.signal(signal.SIGKILL)
    node.process.popen.wait(10 * timeout_factor())


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_two_pages_on_different_nodes_chat(
    cluster: LocalCluster, pages: tuple[ChatPage, ChatPage], artifacts: Path
) -> None:
    alice, bob = pages
    room = new_room()
    node_a, node_b = open_on_distinct_nodes(alice, bob, cluster.http_url, room, ("alice", "bob"))
    assert alice.text_of("status") == f"connected to {node_a}"
    assert bob.text_of("status") == f"connected to {node_b}"

    # Presence: each sees both, in the hook and in the sidebar.
    for page in pages:
        page.wait_until("both present", lambda p: present(p) == ["alice", "bob"])
        assert page.texts("#presence .member .name") == ["alice", "bob"]
    alice.wait_until("bob's arrival", lambda p: "bob joined." in p.texts("#log .notice .text"))

    alice.say("hello from alice")
    bob.wait_until("alice's message", lambda p: "hello from alice" in p.message_texts())
    bob.say("hi alice, bob here")
    alice.wait_until("bob's reply", lambda p: "hi alice, bob here" in p.message_texts())

    conversation = ["hello from alice", "hi alice, bob here"]
    for page in pages:
        # bob's own reply shows on his page when his node echoes it, which may come a moment
        # after alice's node delivered it to her.
        page.wait_until("the conversation", lambda p: p.message_texts() == conversation)
        page.wait_until("an empty outbox", lambda p: p.state()["outbox"] == [])
        assert [m["text"] for m in page.messages()] == conversation
    assert alice.texts("#log .message.own .text") == ["hello from alice"]
    assert bob.texts("#log .message.own .text") == ["hi alice, bob here"]
    assert [m["offset"] for m in alice.messages()] == [m["offset"] for m in bob.messages()]

    # Typing, both ways.
    bob.type("I am typing som")
    alice.wait_until("bob typing", lambda p: p.text_of("typing") == "bob is typing…")
    assert alice.state()["typing"] == ["bob"]
    alice.screenshot(screenshot := artifacts / "chat-page.png")
    width, height = png_size(screenshot)
    assert width >= 600 and height >= 400
    alice.type("me t")
    bob.wait_until("alice typing", lambda p: p.text_of("typing") == "alice is typing…")
    # The hint goes away by itself when nothing more is typed.
    alice.wait_until("bob's typing hint expires", lambda p: p.text_of("typing") == "")


def test_page_rides_out_its_node_being_killed(
    fresh_cluster: LocalCluster, pages: tuple[ChatPage, ChatPage], artifacts: Path
) -> None:
    page = pages[0]
    room = new_room()
    first = page.open(fresh_cluster.http_url, room, "reader").wait_joined()
    doomed = next(n for n in fresh_cluster.nodes if n.node_id == first["node"])
    survivor = next(n for n in fresh_cluster.nodes if n is not doomed)
    texts = [f"message {i:02d}" for i in range(1, 61)]

    with member(survivor.url, room, "sender") as sender:
        for text in texts[:20]:
            sender.say(text)
        page.wait_until("the first 20 messages", lambda p: len(p.messages()) >= 20)
        kill(doomed)
        for text in texts[20:40]:  # while the page is cut off or reconnecting
            sender.say(text)
        after = page.wait_until(
            "joined again on another node",
            lambda p: (s := p.state())["synced"] and s["node"] != doomed.node_id and s,
            timeout=30,
        )
        for text in texts[40:]:
            sender.say(text)
        sent = [sender.next_event("message") for _ in texts]

    page.wait_until("all 60 messages", lambda p: len(p.messages()) >= len(texts))
    # Exactly once and in order: in the hook (with the server's offsets) and on screen.
    assert [(m["offset"], m["text"]) for m in page.messages()] == [
        (m["offset"], m["text"]) for m in sent
    ]
    assert page.message_texts() == texts

    statuses = [entry["status"] for entry in page.state()["statusLog"]]
    assert "reconnecting" in statuses[statuses.index("connected") :], statuses
    notices = page.texts("#log .notice .text")
    assert any(n.startswith("Connection lost (code 1006)") for n in notices), notices
    assert f"Reconnected to {after['node']}: nothing was missed." in notices
    assert page.text_of("status") == f"connected to {after['node']}"
    # The picture shows the outage: the notices around it, scrolled to the middle.
    page.driver.execute_script(
        "[...document.querySelectorAll('#log .notice')]"
        ".find((n) => n.textContent.includes('Connection lost'))"
        ".scrollIntoView({ block: 'center' })"
    )
    page.screenshot(artifacts / "chat-page-after-failover.png")


def test_page_back_in_a_room_with_no_message_yet_says_nothing_was_missed(
    pages: tuple[ChatPage, ChatPage],
) -> None:
    """The page alone in a room without messages, disconnected by the application (reconnect:
    true), resumes from offset 0 of its epoch. The server keeps that epoch for a minute
    after the last member left (within the client's budget of kept epochs), so the resume is
    recovered; it used to be forgotten with the last member and answered epoch_changed, which
    the page then took for nothing missed (it once warned that the server lost its history)."""
    page = pages[0]
    with LocalCluster(1, node_env=serverapi.API_ENV) as cluster:
        serverapi.all_ready(cluster)
        page.open(cluster.http_url, new_room(), "early", token=serverapi.token("early"))
        first = page.wait_joined()

        async def disconnect() -> None:
            async with serverapi.admin_of(cluster) as admin:
                await admin.disconnect("early", reason="maintenance", reconnect=True)

        asyncio.run(disconnect())
        page.wait_until(
            "joined again",
            lambda p: (s := p.state())["synced"] and s["connection"] != first["connection"],
            timeout=30,
        )
        notices = page.texts("#log .notice .text")
        assert f"Reconnected to {first['node']}: nothing was missed." in notices, notices
        warnings = page.texts("#log .notice.warning .text")
        assert [n for n in warnings if "history" in n] == [], warnings
        assert page.message_texts() == []


def test_message_typed_offline_waits_then_is_delivered_once(
    single_node_cluster: LocalCluster, pages: tuple[ChatPage, ChatPage]
) -> None:
    cluster, page = single_node_cluster, pages[0]
    room = new_room()
    page.open(cluster.http_url, room, "traveller").wait_joined()
    page.say("before the outage")
    page.wait_until("first message", lambda p: p.message_texts() == ["before the outage"])

    (node,) = cluster.nodes
    kill(node)  # the only node: nginx has nowhere to send the page
    page.wait_until("reconnecting", lambda p: p.state()["status"] == "reconnecting")
    page.say("written while offline")
    state = page.wait_until("a pending message", lambda p: (s := p.state())["outbox"] and s)
    assert [(i["text"], i["status"]) for i in state["outbox"]] == [
        ("written while offline", "queued")
    ]
    assert page.texts("#outbox .pending .text") == ["written while offline"]
    assert page.texts("#outbox .pending .state") == ["waiting for the connection…"]
    assert page.message_texts() == ["before the outage"]
    assert page.text_of("status").startswith("reconnecting")

    # The node comes back where nginx expects it; the page finds it by itself (backoff).
    cluster.start_node({"ROOMCAST_PORT": str(node.port)})
    page.wait_until(
        "the pending message delivered",
        lambda p: not p.state()["outbox"] and len(p.message_texts()) == 2,
        timeout=40,
    )
    assert page.message_texts() == ["before the outage", "written while offline"]
    assert page.texts("#log .message.own .text") == page.message_texts()
    assert page.texts("#outbox .pending") == []
    with member(cluster.url, room, "auditor") as auditor:
        assert [m["text"] for m in auditor.history()] == page.message_texts()


def test_page_says_what_it_could_not_recover_and_reloads_history(
    pages: tuple[ChatPage, ChatPage],
) -> None:
    """More was missed than the room keeps (5 here): the page reloads and says so."""
    page = pages[0]
    room = new_room()
    with LocalCluster(1, node_env=dict(FAST_ENV, ROOMCAST_HISTORY_SIZE="5")) as cluster:
        (listed,) = cluster.nodes
        hidden = cluster.start_node()  # not in nginx's list: the page cannot reach it
        page.open(cluster.http_url, room, "away").wait_joined()
        with member(hidden.url, room, "talker") as talker:
            talker.say("before")
            page.wait_until("the first message", lambda p: p.message_texts() == ["before"])
            kill(listed)
            page.wait_until("cut off", lambda p: p.state()["status"] == "reconnecting")
            missed = [f"missed {i:02d}" for i in range(1, 13)]
            for text in missed:
                talker.say(text)
            for _ in ["before", *missed]:
                talker.next_event("message")  # all published before the page can come back
            cluster.start_node({"ROOMCAST_PORT": str(listed.port)})
            page.wait_until(
                "the kept history reloaded",
                lambda p: p.message_texts() == ["before", *missed[-5:]],
                timeout=40,
            )
            talker.say("after")
            page.wait_until("live again", lambda p: p.message_texts()[-1] == "after")
    assert page.message_texts() == ["before", *missed[-5:], "after"]
    assert [m["offset"] for m in page.messages()] == [1, 9, 10, 11, 12, 13, 14]
    notices = page.texts("#log .notice.warning .text")
    assert any(n.startswith("You were away longer than the server keeps") for n in notices)


def test_token_from_the_page_url_names_the_user_and_limits_rooms(
    pages: tuple[ChatPage, ChatPage],
) -> None:
    secret = uuid.uuid4().hex + uuid.uuid4().hex
    token = issue_token(secret, "u-ann", name="Ann", rooms=["team-*"])
    with LocalCluster(1, node_env=dict(FAST_ENV, ROOMCAST_AUTH_SECRET=secret)) as cluster:
        page = pages[0]
        state = page.open(cluster.http_url, "team-web", "someone-else", token=token).wait_joined()
        assert state["username"] == "Ann"  # the token's name, not the one asked for
        # The token came in the fragment (never sent to a server) and left the address bar.
        assert token not in page.driver.current_url
        assert page.text_of("me") == "Ann"
        page.say("signed in")
        page.wait_until(
            "own message", lambda p: p.texts("#log .message.own .text") == ["signed in"]
        )

        # A room the token does not allow: the page stops and says why, it does not retry.
        page.open(cluster.http_url, "elsewhere", "Ann", token=token)
        page.wait_until("refused", lambda p: p.state()["status"] == "offline")
        assert page.text_of("status").startswith("offline: the server refused to join")
        assert page.driver.find_element("id", "reconnect").is_displayed()
        # No retry loop: a first retry would come within the backoff base (0.5 s); wait twice that.
        page.holds("offline", lambda p: p.state()["status"] == "offline", seconds=1.0)
        statuses = [entry["status"] for entry in page.state()["statusLog"]]
        assert statuses == ["connecting", "connected", "offline"], statuses
        page.say("queued, not sent")
        page.wait_until("queued", lambda p: len(p.state()["outbox"]) == 1)
        assert page.texts("#outbox .pending .state") == ["waiting for the connection…"]


def test_a_namesake_s_messages_are_not_marked_as_the_reader_s_own(
    pages: tuple[ChatPage, ChatPage],
) -> None:
    """Red team 10: two users whose tokens both say "Alice" (sub alice and mallory). The page
    marked the other's messages as the reader's own (by name); it now goes by user_id."""
    secret = uuid.uuid4().hex + uuid.uuid4().hex
    tokens = [
        issue_token(secret, sub, name="Alice", rooms=["team-*"]) for sub in ("alice", "mallory")
    ]
    with LocalCluster(1, node_env=dict(FAST_ENV, ROOMCAST_AUTH_SECRET=secret)) as cluster:
        for page, token in zip(pages, tokens, strict=True):
            page.open(cluster.http_url, "team-namesakes", "x", token=token).wait_joined()
        alice, mallory = pages
        alice.say("from alice")
        mallory.say("from mallory")
        for page in pages:
            page.wait_until("both messages", lambda p: len(p.message_texts()) == 2)
        assert alice.texts("#log .message.own .text") == ["from alice"]
        assert mallory.texts("#log .message.own .text") == ["from mallory"]
        # Two people, not one "Alice" of 2 connections: each page lists both, itself as "(you)".
        for page in pages:
            page.wait_until(
                "two people", lambda p: p.texts("#presence .member .name") == ["Alice", "Alice"]
            )
            people = page.state()["presence"]
            assert [person["username"] for person in people] == ["Alice", "Alice"]
            assert [person["userId"] for person in people if person["you"]] == [
                page.state()["userId"]
            ]
            assert page.text_of("presence-count") == "2"
            assert len(page.texts("#presence .member.self")) == 1


def test_markup_in_messages_is_shown_never_run(
    cluster: LocalCluster, pages: tuple[ChatPage, ChatPage]
) -> None:
    mallory, victim = pages
    room = new_room()
    mallory.open(cluster.http_url, room, "mallory").wait_joined()
    victim.open(cluster.http_url, room, "victim").wait_joined()
    mallory.say(MARKUP)
    mallory.say(SCRIPT)
    # Each page shows a message when its own node delivers it: wait for both, not just one
    # (a clean-clone CI run once checked mallory's page a moment before its second echo).
    for page in (victim, mallory):
        page.wait_until("both messages", lambda p: p.message_texts() == [MARKUP, SCRIPT])

    def assert_inert(page: ChatPage) -> None:
        assert page.message_texts() == [MARKUP, SCRIPT]
        injected = page.driver.execute_script(
            "return document.querySelectorAll('#log img, #log script, #outbox img').length"
        )
        assert injected == 0
        assert page.driver.execute_script("return window.__pwned === undefined")

    assert_inert(mallory)
    assert_inert(victim)
    # The same through a history reload (a fresh page loads the room's recent messages).
    victim.open(cluster.http_url, room, "victim").wait_joined()
    victim.wait_until("history loaded", lambda p: len(p.message_texts()) == 2)
    assert_inert(victim)


def test_join_form_at_the_root_url(cluster: LocalCluster, pages: tuple[ChatPage, ChatPage]) -> None:
    page = pages[0]
    page.driver.get(cluster.http_url + "/")
    assert page.text_of("status") == "not connected"
    name, room = page.driver.find_element("id", "name"), page.driver.find_element("id", "room")
    assert room.get_attribute("value") == "general"
    name.clear()
    name.send_keys("walk-in")
    room.clear()
    room.send_keys(chosen := new_room())
    page.driver.find_element("css selector", "#join button[type=submit]").click()
    state = page.wait_joined()
    assert (state["room"], state["username"]) == (chosen, "walk-in")
    assert f"?name=walk-in&room={chosen}" in page.driver.current_url
    assert page.text_of("room-title") == f"#{chosen}"


def test_oversized_message_is_refused_by_the_page_not_the_server(
    cluster: LocalCluster, pages: tuple[ChatPage, ChatPage]
) -> None:
    page = pages[0]
    page.open(cluster.http_url, new_room(), "verbose").wait_joined()
    # Over the server's 64 KiB frame limit, which would close the socket (1009).
    page.driver.execute_script(
        "document.getElementById('text').value = 'x'.repeat(70000);"
        "document.getElementById('send').requestSubmit();"
    )
    state = page.wait_until("a failed message", lambda p: (s := p.state())["outbox"] and s)
    (item,) = state["outbox"]
    assert item["status"] == "failed" and "longer than the server accepts" in item["reason"]
    assert page.texts("#outbox .failed button") == ["retry", "discard"]
    page.say("short one")
    page.wait_until("the next message", lambda p: p.message_texts() == ["short one"])
    assert page.state()["status"] == "connected"
    assert page.state()["statusLog"][-1]["status"] == "connected"


def test_backoff_is_exponential_with_full_jitter(
    cluster: LocalCluster, pages: tuple[ChatPage, ChatPage]
) -> None:
    page = pages[0]
    page.driver.get(cluster.http_url + "/")
    result = page.driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        Promise.all([import("/roomcast-client.js"), import("/settings.js")]).then(([m, s]) => {
          const backoff = new m.Backoff(s.BACKOFF);
          done({
            base: s.BACKOFF.base,
            cap: s.BACKOFF.cap,
            samples: [...Array(10).keys()].map(
              (attempt) => Array.from({ length: 400 }, () => backoff.delay(attempt + 1))),
          });
        }, (error) => done({ error: String(error) }));
        """
    )
    assert "error" not in result, result
    base, cap = result["base"], result["cap"]
    for attempt, delays in enumerate(result["samples"]):
        ceiling = min(cap, base * 2**attempt)
        assert all(0 <= d <= ceiling for d in delays), attempt
        # Spread over the whole range, not a fixed delay nor a narrow band around one.
        assert min(delays) < 0.1 * ceiling and max(delays) > 0.9 * ceiling, attempt
        assert len(set(delays)) > 200, attempt
    assert min(cap, base * 2**9) == cap, "the delay stops growing at the cap"


def test_page_told_of_lost_history_reloads_it(
    fresh_cluster: LocalCluster, pages: tuple[ChatPage, ChatPage]
) -> None:
    """Redis restarted empty under a connected page: the server's loss notice is shown at once,
    the history is reloaded, and the room goes on in its new epoch."""
    page, _ = pages
    room = new_room()
    first = page.open(fresh_cluster.http_url, room, "reader").wait_joined()
    node = next(n for n in fresh_cluster.nodes if n.node_id == first["node"])
    with member(node.url, room, "sender") as sender:
        sender.say("before the restart")
        page.wait_until("the first message", lambda p: p.message_texts() == ["before the restart"])
        fresh_cluster.kill_redis()
        fresh_cluster.start_redis()
        lost = page.wait_until(
            "the loss notice",
            lambda p: [n for n in p.texts("#log .notice .text") if "lost this room's history" in n],
            timeout=30,
        )
        assert len(lost) == 1, lost
        for attempt in range(200):  # refused (unavailable) while the node resubscribes
            if sender.send_answered("after", attempt)["type"] == "ack":
                break
        page.wait_until(
            "the new epoch's message",
            lambda p: p.message_texts() == ["before the restart", "after"],
            timeout=20,
        )
    shown = page.messages()
    assert shown[1]["offset"] == 1 and shown[1]["epoch"] != shown[0]["epoch"]
    assert page.state()["status"] == "connected"


def test_page_obeys_the_server_api(pages: tuple[ChatPage, ChatPage]) -> None:
    """A moderator deletes a message (the page greys it out), bans one reader (the page says so
    and stops sending) and disconnects the other for good (the page goes offline, no retry)."""
    with LocalCluster(3, node_env=serverapi.API_ENV) as cluster:
        serverapi.all_ready(cluster)
        room = new_room()
        ann, bob = pages
        ann.open(cluster.http_url, room, "ann", token=serverapi.token("ann")).wait_joined()
        bob.open(cluster.http_url, room, "bob", token=serverapi.token("bob")).wait_joined()
        ann.say("a fine message")
        ann.say("a message to delete")
        bob.wait_until("both messages", lambda p: len(p.messages()) == 2)
        offset = bob.messages()[1]["offset"]

        async def moderate(action: str) -> None:
            async with serverapi.admin_of(cluster) as admin:
                if action == "delete":
                    await admin.delete_message(room, offset)
                elif action == "ban":
                    await admin.ban(room, "ann", seconds=600, reason="spam")
                else:
                    await admin.disconnect("bob", reason="account closed", reconnect=False)

        asyncio.run(moderate("delete"))
        for page in pages:
            page.wait_until(
                "greyed out",
                lambda p: p.texts("#log .message.deleted .text") == ["message deleted"],
            )
            assert p_texts(page) == ["a fine message", "message deleted"]

        asyncio.run(moderate("ban"))
        removal = ann.wait_until("banned", lambda p: p.state().get("removal"))
        assert (removal["kind"], removal["reason"]) == ("banned", "spam")
        assert ann.driver.find_element("id", "text").get_attribute("disabled") is not None
        bob.wait_until("ann left", lambda p: "ann" not in present(p))

        asyncio.run(moderate("disconnect"))
        bob.wait_until("offline", lambda p: p.state()["status"] == "offline")
        assert bob.state()["removal"]["kind"] == "disconnected_for_good"
        bob.holds("no retry", lambda p: p.state()["status"] == "offline", seconds=1.0)


def present(page: ChatPage) -> list[str]:
    """The names in the page's presence list, in its order (namesakes once each)."""
    return [person["username"] for person in page.state()["presence"]]


def p_texts(page: ChatPage) -> list[str]:
    return page.texts("#log .message .text")
