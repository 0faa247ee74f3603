"""Presence, judged from outside: the HTTP API's answer against who is connected, asked of the
nodes' public ports in turn (each answers for every node; nginx is judged elsewhere).

README: a node that dies without cleanup has its members removed from presence within
``ROOMCAST_PRESENCE_TTL`` plus a third of it. After the last fault, every room's presence must
come to name exactly its connected members, once each, within that bound.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class PresenceResult:
    bound_seconds: float
    converged_after: float | None = None  # seconds after the last fault's end; None: never
    ghosts: dict[str, list[str]] = field(default_factory=dict)  # listed, not connected (last look)
    absent: dict[str, list[str]] = field(default_factory=dict)  # connected, not listed (last look)
    errors: dict[str, str] = field(default_factory=dict)  # rooms whose presence was unreadable
    listed: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # wrong rooms, as read

    @property
    def ok(self) -> bool:
        return self.converged_after is not None and self.converged_after <= self.bound_seconds


def diff(expected: set[str], members: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(ghosts, absent): ghosts are listed names nobody connected holds, or listed with more
    connections than there are; absent are connected names not listed."""
    counts = {str(m.get("username")): int(m.get("connections", 1)) for m in members}
    ghosts = sorted(n for n, c in counts.items() if n not in expected or c > 1)
    absent = sorted(expected - set(counts))
    return ghosts, absent


def _fetch(url: str) -> list[dict[str, Any]] | str:
    """The members listed, or why there is no list."""
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}: {exc.read()[:200]!r}"
    except OSError as exc:
        return str(exc)
    try:
        members = json.loads(body).get("members")
    except (ValueError, AttributeError):
        return f"not JSON: {body[:200]!r}"
    return members if isinstance(members, list) else f"no members: {body[:200]!r}"


async def convergence(
    base_urls: list[str],
    expected: Callable[[], dict[str, set[str]]],
    since: float,
    bound: float,
    give_up_after: float,
) -> PresenceResult:
    """Poll every room's presence until it matches ``expected()`` (who is joined right now) in
    every room; a ghost is what outlives ``bound``."""
    result = PresenceResult(bound)
    deadline = since + give_up_after
    for attempt in itertools.count():
        http_url = base_urls[attempt % len(base_urls)]  # every node answers for all of them
        result.ghosts, result.absent, result.errors, result.listed = {}, {}, {}, {}
        for room, names in expected().items():
            members = await asyncio.to_thread(_fetch, f"{http_url}/api/rooms/{room}/presence")
            if isinstance(members, str):
                result.errors[room] = members
                members = []
            ghosts, absent = diff(names, members)
            if ghosts or absent:
                result.listed[room] = members
            if ghosts:
                result.ghosts[room] = ghosts
            if absent:
                result.absent[room] = absent
        now = time.monotonic()
        if not result.ghosts and not result.absent and not result.errors:
            result.converged_after = max(0.0, now - since)
            return result
        if now > deadline:
            return result
        await asyncio.sleep(0.2)
    raise AssertionError("unreachable")
