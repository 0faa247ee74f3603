"""Browser fixtures: Debian's headless Chromium driven by Selenium, against a REAL local cluster.

Only the system browser is used (`/usr/bin/chromium` + `/usr/bin/chromedriver`, passed explicitly,
so Selenium Manager never downloads anything). Missing, they make the tests FAIL with the command
that installs them: these tests are part of `make test`, and a skip would hide that.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from roomcast_dev.devcluster import REPO_ROOT, LocalCluster
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

from tests.support.chatpage import ChatPage
from tests.support.cluster import FAST_ENV

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = REPO_ROOT / "tests" / "artifacts"

CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",  # tests run as root, where Chromium's sandbox cannot start
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--window-size=1100,720",
    "--no-first-run",
    "--disable-extensions",
    "--disable-background-networking",
    # Two pages chat at once: neither may be throttled as a background page.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
)


def _require_chromium() -> None:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: run `make browser-deps` "
            "(installs Debian's chromium and chromium-driver)",
            pytrace=False,
        )


def _start_chromium() -> webdriver.Chrome:
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in CHROMIUM_ARGS:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))


@pytest.fixture(scope="session")
def chromium() -> Iterator[Callable[[], ChatPage]]:
    """Opens headless Chromium windows (one browser process each); all are closed at the end."""
    _require_chromium()
    started: list[ChatPage] = []

    def open_page() -> ChatPage:
        page = ChatPage(_start_chromium())
        started.append(page)
        return page

    try:
        yield open_page
    finally:
        for page in started:
            page.quit()


@pytest.fixture(scope="session")
def browser_pair(chromium: Callable[[], ChatPage]) -> tuple[ChatPage, ChatPage]:
    """Two browsers kept for the whole session (starting Chromium is the slow part)."""
    return chromium(), chromium()


@pytest.fixture
def pages(browser_pair: tuple[ChatPage, ChatPage]) -> Iterator[tuple[ChatPage, ChatPage]]:
    """The two browsers, each left on a blank page afterwards (closing its WebSocket)."""
    yield browser_pair
    for page in browser_pair:
        page.blank()


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """redis + 3 nodes + nginx, shared by the tests that do not break it."""
    with LocalCluster(3, node_env=FAST_ENV) as running:
        yield running


@pytest.fixture
def fresh_cluster() -> Iterator[LocalCluster]:
    """A cluster of one's own, for a test that kills a node."""
    with LocalCluster(3, node_env=FAST_ENV) as running:
        yield running


@pytest.fixture
def single_node_cluster() -> Iterator[LocalCluster]:
    """redis + ONE node + nginx: killing the node leaves the page with nowhere to go."""
    with LocalCluster(1, node_env=FAST_ENV) as running:
        yield running


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
