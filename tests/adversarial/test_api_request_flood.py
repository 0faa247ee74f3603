"""Red team 4's open finding: refused HTTP API requests are answered at any rate they arrive.

A request the node refuses (over its API rate, or a bad token after the per-address signature
checks) still costs the node a parse and an answer: 16 keep-alive connections of one address
sending forged bearer tokens through nginx kept a node 2.3 s busy in 3 s. Defended at the edge:
nginx answers 429 itself above 200 requests a second per client (400 at once), so a flood
reaches the nodes at that rate, whatever it sends.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.adversarial.bystander import BystanderProbe
from tests.adversarial.httpraw import keep_asking

CONNECTIONS = 16  # keep-alive connections of one address, through nginx
WINDOW_S = 3.0
# nginx's limit (200/s per client, 400 at once) over the window, plus what went through before
# it started counting: ~1,000. Bounded at 1,400 (the flood sends several thousand).
REACHING_THE_NODES = 1400


REQUEST = b"GET /api/rooms/flood/presence HTTP/1.1\r\nHost: roomcast\r\n\r\n"


async def test_a_request_flood_reaches_the_nodes_only_at_nginx_limit(
    cluster: Any, probe: BystanderProbe
) -> None:
    origins = {"nginx": 0, "node": 0, "closed": 0}
    with probe.on(cluster.nodes[0]) as bystander:
        deadline = time.monotonic() + WINDOW_S
        await asyncio.gather(
            *(
                keep_asking(cluster.nginx_port, REQUEST, deadline, origins)
                for _ in range(CONNECTIONS)
            )
        )
    figures = (
        f"{CONNECTIONS} keep-alive connections of one address asking as fast as answered for "
        f"{WINDOW_S:.0f} s through nginx: {origins['node']} answered by the nodes (bound "
        f"{REACHING_THE_NODES}), {origins['nginx']} refused 429 by nginx, "
        f"{origins['closed']} connections closed under it"
    )
    print(figures, bystander[0].describe())
    assert origins["node"] <= REACHING_THE_NODES, figures
    assert origins["nginx"] > 0, figures
    BystanderProbe.assert_fast(bystander, "an API request flood from one address")
