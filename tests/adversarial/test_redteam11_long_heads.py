"""Red team 11: handshakes whose request line or header lines are too long.

websockets answers them itself (414 for a request line over 8 KiB, 431 for a header line over
8 KiB or more than 128 headers), before the node sees a request: the node counted none of
them. docs/security.md says every refused handshake is counted
(`roomcast_handshakes_rejected_total{status}`, `roomcast_auth_failures_total{code}`); a token
over ~8 KB (a long `rooms` claim) in the query or a subprotocol is refused this way.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.adversarial.observe import metrics_text
from tests.adversarial.rawws import HandshakeRefused, RawWebSocket

LONG = "a" * 9000
HEADS = {
    "token in the query over 8 KiB": ("/chat?token=" + LONG, [], 414),
    "token subprotocol over 8 KiB": (
        "/chat",
        [("Sec-WebSocket-Protocol", f"roomcast, roomcast.token.{LONG}")],
        431,
    ),
    "129 header lines": ("/chat", [(f"X-Filler-{i}", "x") for i in range(129)], 431),
}


def _sample(text: str, name: str, label: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and label in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize("case", list(HEADS))
async def test_a_head_over_websockets_limits_is_counted(cluster: Any, case: str) -> None:
    path, headers, status = HEADS[case]
    node = cluster.nodes[0]
    rejected = "roomcast_handshakes_rejected_total"
    failures = "roomcast_auth_failures_total"
    before = metrics_text(node.metrics_url)
    with pytest.raises(HandshakeRefused) as refused:
        await RawWebSocket.connect("127.0.0.1", node.port, path, headers)
    assert refused.value.status == status, refused.value.head
    after = metrics_text(node.metrics_url)
    counted = (
        _sample(after, rejected, f'status="{status}"')
        - _sample(before, rejected, f'status="{status}"'),
        _sample(after, failures, 'code="malformed_request"')
        - _sample(before, failures, 'code="malformed_request"'),
    )
    assert counted == (1, 1), f"{case}: answered {status}, counted {counted}"
