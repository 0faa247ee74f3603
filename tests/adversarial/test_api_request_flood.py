"""Red team 4's open finding: refused HTTP API requests are answered at any rate they arrive.

A request the node refuses (over its API rate, or a bad token after the per-address signature
checks) still costs the node a parse and an answer: 16 keep-alive connections of one address
sending forged bearer tokens through nginx kept a node 2.3 s busy in 3 s. Defended at the edge:
nginx answers 429 itself above 200 requests a second per client (400 at once), so a flood
reaches the nodes at that rate, whatever it sends.
"""

from __future__ import annotations

import time
from typing import Any

from tests.adversarial.bystander import BystanderProbe
from tests.adversarial.httpraw import flood

CONNECTIONS = 16  # keep-alive connections of one address, through nginx
# Requests each connection sends at once (HTTP/1.1 pipelining) before reading their answers. The
# first batches all go at once (2,048 requests), so nginx meets them together whatever CPU this
# process gets: nginx forwards them as fast as the nodes answer, and once the nodes answered
# more than 250 a second it is past its burst and refuses the rest itself. Asked one at a time
# as answered, the flood's rate was this process's: the bystander probe runs it at idle
# priority, and beside two busy loops it sent 19-100 requests in 3 s, far under nginx's limit,
# and nginx refused none (0 of 4 runs passed).
PIPELINED = 128
WINDOW_S = 3.0
# nginx's limit_req for /api/ (loadbalancer/nginx.conf.template): 200 a second, 400 at once.
# Over any span of T seconds it forwards at most 400 + 1 + 200 * T requests (a request is let
# through while the bucket, drained at the rate, holds at most the burst after it).
NGINX_RATE_PER_S = 200
NGINX_BURST = 400


REQUEST = b"GET /api/rooms/flood/presence HTTP/1.1\r\nHost: roomcast\r\n\r\n"


async def test_a_request_flood_reaches_the_nodes_only_at_nginx_limit(
    cluster: Any, probe: BystanderProbe
) -> None:
    origins = {"nginx": 0, "node": 0, "closed": 0}
    with probe.on(cluster.nodes[0]) as bystander:
        started = time.monotonic()
        deadline = started + WINDOW_S
        await flood(
            cluster.nginx_port,
            REQUEST,
            deadline,
            origins,
            connections=CONNECTIONS,
            pipelined=PIPELINED,
        )
        # From before the first request was sent to after the last answer was read: nginx
        # counted every answered request within it.
        lasted = time.monotonic() - started
    reaching_the_nodes = NGINX_BURST + 1 + int(NGINX_RATE_PER_S * lasted)
    figures = (
        f"{CONNECTIONS} keep-alive connections of one address sending {PIPELINED} requests at "
        f"once, all together first, then again as soon as answered, for {lasted:.2f} s through "
        f"nginx: {origins['node']} answered by the nodes (bound {reaching_the_nodes}), "
        f"{origins['nginx']} refused 429 by nginx, {origins['closed']} connections closed under it"
    )
    print(figures, bystander[0].describe())
    assert origins["node"] <= reaching_the_nodes, figures
    assert origins["nginx"] > 0, figures
    BystanderProbe.assert_fast(bystander, "an API request flood from one address")
