"""The client pages must name what the clients offer: the JavaScript client's events and public
members, the Python server API wrapper's methods."""

from __future__ import annotations

import re

from roomcast.admin import RoomcastAdmin
from tests.support.docs import DOCS
from tests.support.paths import REPO as ROOT


def test_the_javascript_page_lists_every_event_the_client_emits() -> None:
    events = (ROOT / "clients" / "js" / "src" / "events.ts").read_text(encoding="utf-8")
    emitted = set(re.findall(r'^\s+type: "([a-z_]+)";', events, re.M))
    page = (DOCS / "clients" / "javascript.md").read_text(encoding="utf-8")
    table = page[page.index("## Events") : page.index("## Methods")]
    rows = re.findall(r"^\| ([^|]+) \| (?:server|client) \|", table, re.M)
    assert {name for row in rows for name in re.findall(r"`([a-z_]+)`", row)} == emitted


def test_the_javascript_page_names_every_public_member_of_the_client() -> None:
    source = (ROOT / "clients" / "js" / "src" / "client.ts").read_text(encoding="utf-8")
    body = source[source.index("export class RoomcastClient") :]
    body = body[: body.index("\n}\n")]
    # Two-space indented: `name(`, `async name(`, `async *name(`, `get name(`, `name: T =`.
    members = set(
        re.findall(r"^  (?:readonly |async \*?|get )?([a-zA-Z]\w*)\s*(?:[(<]|: |=)", body, re.M)
    ) - {"constructor"}
    page = (DOCS / "clients" / "javascript.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(?:client\.)?([a-zA-Z]\w*)[(`]", page[page.index("## Events") :]))
    assert members - named == set()


def test_the_http_api_page_names_every_method_of_the_python_admin() -> None:
    page = (DOCS / "http-api.md").read_text(encoding="utf-8")
    sentence = page[page.index("One method per row above") :].split(")", 1)[0]
    methods = {name for name in vars(RoomcastAdmin) if not name.startswith("_")}
    assert set(re.findall(r"`(\w+)`", sentence)) == methods
