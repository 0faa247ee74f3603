"""Red team 13: refreshing with two tokens in turn.

A node keeps every connection's token lifetime on one heap; a refresh leaves the old entries
there, to be skipped when due once the connection holds another token. They were told apart by
the token's ``exp``: a user holding two valid tokens (exp A and B; an application's token URL
hands out a new one whenever asked) refreshing A, B, A, B... made every entry made for A valid
again. Each refresh added two entries that stayed for the token's lifetime (at the token check
rate, 10 a second per user and node: ~72,000 an hour, heap and connection references that no
compaction removed), and when A's notice came every one of them sent the connection its own
``token_expiring`` at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.adversarial.devcluster_shim import LocalCluster, scaled
from tests.adversarial.rawws import RawWebSocket
from tests.adversarial.readiness import until_ready
from tests.adversarial.tokens import SECRET, sign

# Tokens live LIFETIME_S; the notice comes NOTICE_S before exp: 15 s for the refreshes.
LIFETIME_S = 45
NOTICE_S = 30
PAIRS = 60  # refreshes B then A: within the token check burst (64) and rate (10/s) mostly


@pytest.fixture(scope="module")
def node() -> Iterator[Any]:
    env = {"ROOMCAST_AUTH_SECRET": SECRET, "ROOMCAST_TOKEN_REFRESH_NOTICE": str(NOTICE_S)}
    with LocalCluster(1, nginx=False, node_env=env) as running:
        yield running.nodes[0]


async def test_turns_of_two_tokens_leave_one_notice(node: Any) -> None:
    await until_ready(node)
    exp = int(time.time()) + LIFETIME_S
    first, second = sign(exp=exp), sign(exp=exp + 1)
    ws = await RawWebSocket.connect("127.0.0.1", node.port, path=f"/chat?token={first}")
    try:
        refreshed = refused = 0
        for pair in range(PAIRS):
            for turn, token in enumerate((second, first)):
                request_id = pair * 2 + turn
                await ws.send({"type": "refresh", "token": token, "id": request_id})
                answer = await ws.next_text(id=request_id)
                if answer["type"] == "refreshed":
                    refreshed += 1
                else:
                    refused += 1
            if pair >= 25:
                await asyncio.sleep(0.2)  # within the token check rate after its burst
        # The notice of exp (the first token's, held again at the end) is due at exp - NOTICE_S.
        due = exp - NOTICE_S
        assert time.time() < due, "the refreshes took past the notice: shorten the test"
        await ws.next_text(type="token_expiring", timeout=due - time.time() + 10)
        # Anything sent for the same due time comes in the same loop turn: give it a moment.
        await asyncio.sleep(scaled(1.0))
        notices = [event for event in ws.received.texts if event["type"] == "token_expiring"]
        figures = (
            f"{refreshed} refreshes taken ({refused} refused), two tokens in turn, the first "
            f"held at the end: {len(notices)} token_expiring for it (one expected)"
        )
        print(figures)
        assert refreshed >= PAIRS, figures
        assert len(notices) == 1, figures
        assert not ws.received.ended.is_set(), figures
        # A refresh after the notice still takes: the connection is in order.
        await ws.send({"type": "refresh", "token": sign(exp=exp + 600), "id": "last"})
        assert (await ws.next_text(id="last"))["type"] == "refreshed"
    finally:
        await ws.close()
