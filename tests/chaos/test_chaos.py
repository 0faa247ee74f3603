"""The short fixed-seed chaos run of ``make test``: one round of every fault kind on standalone
Redis under steady traffic, through nginx, judged by the checker. ``make chaos`` runs long ones.

It asserts the guarantee itself (docs/guarantees.md; issue 14), so it fails
for as long as any fault kind loses an acknowledged message in silence.
"""

from __future__ import annotations

import json

import pytest

from tests.chaos import report
from tests.chaos.__main__ import ARTIFACTS
from tests.chaos.devtools import timeout_factor
from tests.chaos.faults import FAULTS_BY_TOPOLOGY
from tests.chaos.runner import RunConfig, run

pytestmark = pytest.mark.integration

SEED = 14
KINDS = FAULTS_BY_TOPOLOGY["standalone"]
# 8 members per room (2 senders): enough reconnecting clients after a node kill to show whether
# nginx sends them to the surviving nodes at once.
READERS_PER_ROOM = 6
# Not vacuous: 6 senders at ~5 messages/s for most of a minute; far fewer means it did not run.
MIN_ACKNOWLEDGED = 150
MIN_DELIVERED = 1200
RECONNECT_BOUND_SECONDS = 2.0  # after a node kill or drain, through nginx, first retry or so


@pytest.mark.timeout(int(300 * timeout_factor()))
async def test_one_round_of_every_fault_keeps_the_delivery_guarantee() -> None:
    config = RunConfig(
        seed=SEED,
        duration=75,
        kinds=KINDS,
        max_faults=len(KINDS),
        readers_per_room=READERS_PER_ROOM,
    )
    lines: list[str] = []
    result = await run(config, progress=lines.append)
    doc = report.summary(result)
    report.write(doc, ARTIFACTS / f"chaos-test-{SEED}.json")
    summary = report.text(doc)

    assert sorted({f.kind for f in result.faults}) == sorted(KINDS), "\n".join(lines)
    counters = doc["counters"]
    assert counters["acknowledged"] >= MIN_ACKNOWLEDGED, summary
    assert counters["delivered"] >= MIN_DELIVERED, summary
    assert result.caught_up, summary
    assert doc["failures"] == {}, summary + "\n" + json.dumps(doc["per_fault_kind"])
    for kind, stats in doc["reconnect_through_nginx"].items():
        assert stats["episodes"] > 0, f"{kind}: no client was on the victim node\n{summary}"
        assert stats["never_back"] == 0, summary
        assert stats["max_s"] <= RECONNECT_BOUND_SECONDS * timeout_factor(), summary
