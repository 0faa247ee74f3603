"""Members that leave their room and rejoin it at once with ``since``, over and over on one
connection (about 100 rejoins a second each), under 2 WebSocket senders per room at 50
messages/s, HTTP posts, and an event stream of each room on every node and through nginx: each
rejoin is recovered and the member gets every acknowledged message once and in order. Before,
the rejoin's own ``user_left``, still on its way through pub/sub, was taken as the join's
marker: a message published just before the join script, not yet received, was sent from
history and then live again (on main, most runs of this churn had a duplicate; see
``tests/unit/test_faultteam12_leave_then_rejoin_marker.py``, which fails on main every time)."""

from __future__ import annotations

import pytest
from roomcast_dev.devcluster import LocalCluster

from tests.support.delivery import Traffic
from tests.support.rejoiners import churned_through

pytestmark = pytest.mark.integration

CHURN_ACKS = 150  # per sender: about 3 s of churn


async def test_leave_and_rejoin_churn_gets_each_message_once(quick_cluster: LocalCluster) -> None:
    async def nothing_but_churn(traffic: Traffic) -> None:
        await traffic.more_acks(CHURN_ACKS, timeout=30)

    rooms = ["churned-a", "churned-b"]
    await churned_through(quick_cluster, rooms, nothing_but_churn, "leave/rejoin churn")
