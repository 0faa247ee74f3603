"""A headless-Chromium walk through the example backend (examples/chat_backend), for real.

PostgreSQL, Redis, three nodes and nginx, the app; two users chat in two browsers, a moderator
in a third deletes a message and bans one of them, and the history kept in PostgreSQL is still
there after Redis is restarted empty.

``test_moderation_reaches_the_open_pages`` needs issue 16's server API (the api16 branch): the
deletion and the ban reach the open pages as ``message_deleted`` and ``banned`` events. The first
walk needs only main: what the moderator does is kept in PostgreSQL and enforced by the hooks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from roomcast_dev.example import ExampleStack
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.support.chatpage import ChatPage, State
from tests.support.cluster import FAST_ENV, ready, until

T = TypeVar("T")


class ExamplePage(ChatPage):
    """A window on the example app: its state is ``window.chat`` (or ``window.moderation``)."""

    def wait_until(
        self, what: str, check: Callable[[ExamplePage], T | None], timeout: float = 15
    ) -> T:
        return super().wait_until(what, lambda _: check(self), timeout)

    def state(self) -> State:
        value = self.driver.execute_script("return window.chat || window.moderation || null")
        return value if isinstance(value, dict) else {}

    def sign_in(self, base_url: str, name: str, room: str) -> ExamplePage:
        self.driver.get(f"{base_url}/?room={room}")
        self.wait_until("the page decided", lambda p: p.visible("login") or p.visible("chat"))
        if self.visible("login"):
            self.driver.find_element(By.ID, "login-name").send_keys(name)
            self.driver.find_element(By.ID, "login-password").send_keys(f"{name}-pass", Keys.ENTER)
        self.wait_until(f"{name} joined {room}", lambda p: p.state().get("joined"))
        return self

    def visible(self, element_id: str) -> bool:
        return bool(
            self.driver.execute_script(
                "const e = document.getElementById(arguments[0]); return !!e && !e.hidden",
                element_id,
            )
        )

    def shown(self) -> list[str]:
        """What the reader sees in the message list, "author: text"."""
        return self.texts("#messages li")

    def sees(self, line: str) -> bool:
        return line in self.shown()

    def notices(self) -> list[str]:
        return [str(n) for n in self.state().get("notices", [])]


@pytest.fixture(scope="module")
def stack() -> Iterator[ExampleStack]:
    with ExampleStack(3, node_env=FAST_ENV) as running:
        yield running


@pytest.fixture(scope="module")
def windows(chromium: Callable[[], ChatPage]) -> tuple[ExamplePage, ExamplePage, ExamplePage]:
    """alice, bob and the moderator, each in a browser of its own (its own cookies)."""
    return (
        ExamplePage(chromium().driver),
        ExamplePage(chromium().driver),
        ExamplePage(chromium().driver),
    )


def moderate(page: ExamplePage, base_url: str, room: str) -> None:
    page.sign_in(base_url, "moderator", room)
    page.driver.get(f"{base_url}/moderate")
    page.wait_until("the moderation view loaded", lambda p: p.state().get("loaded"))
    field = page.driver.find_element(By.ID, "room")
    field.clear()
    field.send_keys(room)
    reload_rows(page)


def reload_rows(page: ExamplePage) -> list[dict[str, Any]]:
    before = page.state()["loaded"]
    page.driver.find_element(By.ID, "load").click()
    state = page.wait_until(
        "the rows reloaded", lambda p: p.state()["loaded"] > before and p.state()
    )
    rows: list[dict[str, Any]] = state["rows"]
    return rows


def act_on(page: ExamplePage, text_or_user: str, action: str) -> dict[str, Any]:
    """Click ``action`` on the first row whose text (or user) matches; the app's answer."""
    before = len(page.state().get("results", []))
    rows = page.driver.find_elements(By.CSS_SELECTOR, "#messages tbody tr")
    for row in rows:
        cells = [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        if text_or_user in (cells[2], cells[3]):
            row.find_element(By.CSS_SELECTOR, f"button.{action}").click()
            break
    else:
        raise AssertionError(f"no row for {text_or_user!r} in {[r.text for r in rows]}")

    def answered(p: ExamplePage) -> State | None:
        state = p.state()
        return state if len(state.get("results", [])) > before else None

    result: dict[str, Any] = page.wait_until(f"{action} answered", answered)["results"][-1]
    return result


def test_two_users_chat_and_the_history_outlives_redis(
    stack: ExampleStack, windows: tuple[ExamplePage, ExamplePage, ExamplePage]
) -> None:
    alice, bob, moderator = windows
    room = "walk"
    alice.sign_in(stack.url, "alice", room)
    bob.sign_in(stack.url, "bob", room)
    alice.say("hello bob")
    bob.wait_until("bob sees alice", lambda p: p.sees("alice: hello bob"))
    bob.say("well darn it")  # the publish hook masks it before it gets its offset
    alice.wait_until("the masked message", lambda p: p.sees("bob: well d*** it"))
    bob.say("buy cheap spam")  # refused by the publish hook: nobody sees it
    bob.wait_until(
        "bob told why",
        lambda p: "publish_denied: that looks like spam" in p.notices(),
    )
    bob.say("sorry")
    alice.wait_until("the next message", lambda p: p.sees("bob: sorry"))
    assert not any("spam" in line for line in alice.shown())

    moderate(moderator, stack.url, room)
    deleted = act_on(moderator, "sorry", "delete")
    assert deleted["status"] == 200
    banned = act_on(moderator, "bob", "ban-1h")
    assert banned["status"] == 200 and banned["body"]["until"]
    # The ban is the application's too: its join hook refuses bob on every node from now on.
    bob.driver.refresh()
    bob.wait_until("bob refused", lambda p: any("join_denied" in n for n in p.notices()))
    assert "you are banned from walk" in " ".join(bob.notices())

    # Redis restarted empty: the room's history in Redis is gone; PostgreSQL still has it.
    stack.cluster.kill_redis()
    stack.cluster.start_redis()
    nodes = stack.cluster.nodes
    asyncio.run(until(lambda: all(ready(node) for node in nodes), 30, "nodes ready again"))
    alice.driver.refresh()
    alice.wait_until("alice back", lambda p: p.state().get("joined"))
    alice.wait_until(
        "the persisted history",
        lambda p: (
            p.shown()[:3] == ["alice: hello bob", "bob: well d*** it", "bob: (message deleted)"]
        ),
    )
    alice.say("still here")
    alice.wait_until("live again", lambda p: p.sees("alice: still here"))


def test_moderation_reaches_the_open_pages(
    stack: ExampleStack, windows: tuple[ExamplePage, ExamplePage, ExamplePage]
) -> None:
    """Needs the api16 branch: the server API's message_deleted and banned events."""
    alice, bob, moderator = windows
    room = "walk2"
    alice.sign_in(stack.url, "alice", room)
    bob.sign_in(stack.url, "bob", room)
    bob.say("something rude")
    alice.wait_until("alice sees it", lambda p: p.sees("bob: something rude"))
    moderate(moderator, stack.url, room)
    # The archiver gives the row its offset once the room's stream shows the message.
    moderator.wait_until(
        "the message archived with its offset",
        lambda p: any(row["offset"] for row in reload_rows(p)),
    )
    deleted = act_on(moderator, "something rude", "delete")
    assert deleted["body"]["ok"], deleted
    for page in (alice, bob):
        page.wait_until("deleted live", lambda p: p.sees("bob: (message deleted)"))
    banned = act_on(moderator, "bob", "ban-1h")
    assert banned["body"]["ok"], banned
    bob.wait_until("bob banned live", lambda p: any("banned from walk2" in n for n in p.notices()))
    alice.say("bob is gone")
    alice.wait_until("alice speaks on", lambda p: p.sees("alice: bob is gone"))
    assert not bob.sees("alice: bob is gone")
