"""Red team: asking about room names costs Redis nothing that outlives the answer.

A client may ask any room's history over the HTTP API (open mode, or any room its token allows)
without being a member. The scripts that read a room's sequence used to leave the room's
lineage key behind for a week (`rc:{room}:line`, Sentinel mode; with standalone Redis fenced
too, every deployment): one address at the API's rate (20/s) would have kept ~12 million keys
alive. docs/security.md bounds what a client may keep in Redis by its rooms' history.
"""

from __future__ import annotations

import uuid
from typing import Any

from tests.adversarial.httpraw import http
from tests.adversarial.observe import redis_command

ASKED_ROOMS = 30  # within the API's default burst (40) from one address


async def test_history_of_rooms_nobody_is_in_leaves_no_key(cluster: Any) -> None:
    prefix = f"nobody-{uuid.uuid4().hex[:8]}"
    statuses = []
    for index in range(ASKED_ROOMS):
        answer = await http(cluster.nginx_port, "GET", f"/api/rooms/{prefix}-{index}/history")
        statuses.append(answer.status)
    keys = redis_command(cluster.redis_port, "KEYS", f"rc:{{{prefix}-*")
    figures = f"{ASKED_ROOMS} history requests on empty rooms ({set(statuses)}): keys left {keys}"
    print(figures)
    assert statuses == [200] * ASKED_ROOMS, figures
    assert not keys, figures
