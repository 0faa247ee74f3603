"""Beyond the issue: the page against hostile message text, through the real DOM. Debian's headless
Chromium (Selenium, the system chromedriver) opens the page from the cluster's nginx; a message
posted through the API carries markup and script. Defended: shown as text, never run."""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tests.adversarial.devcluster_shim import scaled
from tests.adversarial.httpraw import http

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PAYLOADS = [
    '<img src=x onerror="window.__xss=1">',
    "<script>window.__xss=2</script>",
    '<svg onload="window.__xss=3"></svg>',
    '"><iframe src="javascript:window.parent.__xss=4"></iframe>',
]


def chromium() -> webdriver.Chrome:
    assert os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK), (
        "chromium/chromedriver missing: `make browser-deps`"
    )
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


async def test_hostile_message_text_is_shown_not_run(cluster: Any) -> None:
    room = f"xss-{uuid.uuid4().hex[:6]}"
    for payload in PAYLOADS:
        answer = await http(
            cluster.nginx_port, "POST", f"/api/rooms/{room}/messages",
            json_body={"text": payload, "username": "eve"},
        )  # fmt: skip
        assert answer.status == 201, answer.status
    browser = chromium()
    try:
        browser.get(f"http://127.0.0.1:{cluster.nginx_port}/?name=ann&room={room}")
        deadline = time.monotonic() + scaled(20)
        texts: list[str] = []
        while time.monotonic() < deadline:
            texts = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#log .message .text")]
            if len(texts) >= len(PAYLOADS):
                break
            time.sleep(0.2)
        injected = browser.execute_script(
            "return [window.__xss, document.querySelectorAll('#log img, #log script, #log svg,"
            " #log iframe').length]"
        )
    finally:
        browser.quit()
    print(f"page shows {len(texts)} hostile messages as text; window.__xss, elements: {injected}")
    assert texts == PAYLOADS, texts
    assert injected == [None, 0], injected
