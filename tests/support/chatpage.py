"""One headless Chromium window on the chat page, read through its DOM and `window.roomcast`."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from roomcast_dev.devcluster import timeout_factor
from selenium.common.exceptions import WebDriverException
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

T = TypeVar("T")
State = dict[str, Any]

POLL_SECONDS = 0.05


class ChatPage:
    def __init__(self, driver: Chrome) -> None:
        self.driver = driver

    # Navigation

    def open(
        self, base_url: str, room: str, name: str, token: str | None = None, **extra: str
    ) -> ChatPage:
        query = urllib.parse.urlencode({**extra, "room": room, "name": name})
        # The token goes in the fragment, which the browser never sends to a server.
        fragment = "#" + urllib.parse.urlencode({"token": token}) if token else ""
        self.driver.get(f"{base_url}/?{query}{fragment}")
        return self

    def blank(self) -> None:
        # A browser that died is reported by the test that used it, not here.
        with contextlib.suppress(WebDriverException):
            self.driver.get("about:blank")

    def quit(self) -> None:
        with contextlib.suppress(WebDriverException):
            self.driver.quit()

    # Reading the page

    def state(self) -> State:
        value = self.driver.execute_script("return window.roomcast ? window.roomcast.state : null")
        return value if isinstance(value, dict) else {}

    def messages(self) -> list[State]:
        value = self.driver.execute_script("return window.roomcast ? window.roomcast.messages : []")
        return list(value)

    def texts(self, selector: str) -> list[str]:
        """textContent of every element matching ``selector`` (what the reader sees, unrendered)."""
        value = self.driver.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent)",
            selector,
        )
        return [str(text) for text in value]

    def message_texts(self) -> list[str]:
        return self.texts("#log .message .text")

    def text_of(self, element_id: str) -> str:
        return str(self.driver.find_element(By.ID, element_id).text)

    def console(self) -> list[str]:
        try:
            entries = self.driver.get_log("browser")  # type: ignore[no-untyped-call]
            return [str(entry["message"]) for entry in entries]
        except WebDriverException:
            return []

    # Acting like a person

    def type(self, text: str) -> None:
        self.driver.find_element(By.ID, "text").send_keys(text)

    def say(self, text: str) -> None:
        self.driver.find_element(By.ID, "text").send_keys(text, Keys.ENTER)

    def screenshot(self, path: Path) -> None:
        # Two animation frames: the last DOM change (or scroll) is painted, not the one before.
        self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "requestAnimationFrame(() => requestAnimationFrame(() => done()));"
        )
        assert self.driver.save_screenshot(str(path)), f"no screenshot written to {path}"

    # Waiting

    def wait_until(
        self, what: str, check: Callable[[ChatPage], T | None], timeout: float = 15
    ) -> T:
        """Poll ``check`` until it returns something truthy; fail with the page's state if not."""
        deadline = time.monotonic() + timeout * timeout_factor()
        while True:
            result = check(self)
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"page never reached: {what}\n"
                    f"state: {json.dumps(self.state(), indent=1)[:4000]}\n"
                    f"console: {self.console()[-20:]}"
                )
            time.sleep(POLL_SECONDS)

    def holds(self, what: str, check: Callable[[ChatPage], object], seconds: float) -> None:
        """``check`` stays true for ``seconds``: the only way to see that something does NOT
        happen (e.g. a retry), so ``seconds`` is the longest it could take to happen."""
        deadline = time.monotonic() + seconds * timeout_factor()
        while time.monotonic() < deadline:
            assert check(self), f"no longer true: {what}\nstate: {self.state()}"
            time.sleep(POLL_SECONDS)

    def wait_joined(self, timeout: float = 20) -> State:
        """Connected, joined, and the catch-up in: the page can send."""
        return self.wait_until(
            "joined and synced",
            lambda page: (state := page.state()).get("synced") and state,
            timeout,
        )


def new_room() -> str:
    return "web-" + uuid.uuid4().hex[:10]


def open_on_distinct_nodes(
    first: ChatPage, second: ChatPage, base_url: str, room: str, names: tuple[str, str]
) -> tuple[str, str]:
    """nginx picks the node (least_conn): reopen the second page until it lands elsewhere."""
    node_a = first.open(base_url, room, names[0]).wait_joined()["node"]
    for _ in range(10):
        node_b = second.open(base_url, room, names[1]).wait_joined()["node"]
        if node_b != node_a:
            return node_a, node_b
    raise AssertionError(f"the second page stayed on {node_a} in 10 attempts")
