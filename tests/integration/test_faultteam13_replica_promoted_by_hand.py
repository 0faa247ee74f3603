"""A replica promoted by hand (``REPLICAOF NO ONE``, no Sentinel) while the old primary stays up
and writable: the nodes keep the primary they were given. Then the service's address is moved to
the promoted replica while the nodes' open links stay on the old one, and their subscriber links
are cut: they listen on the new server through the address while their scripts still run on the
old one.

Before, every message was acknowledged (run on the old primary) and heard by no one, untold: 140
acknowledged, the last 40 of each room reached none of the 10 members, 0 ``loss``. Now a link
that connects to another server than its sibling holds (each link learns its server's
``run_id`` on connect) makes the sibling connect again, through the address: the promoted
replica's first write starts a new epoch and every member is told with ``epoch_changed``.
"""

from __future__ import annotations

from functools import partial

import pytest

from tests.support.address_move import replica_behind_an_address
from tests.support.delivery import in_thread

pytestmark = pytest.mark.integration

ROOMS = ["promoted-east", "promoted-west"]


async def test_replica_promoted_by_hand_while_the_old_primary_still_takes_writes() -> None:
    async with replica_behind_an_address(ROOMS) as service:
        traffic = service.traffic
        await in_thread(partial(service.new.replicaof, "NO", "ONE"))
        await traffic.more_acks(10)
        service.relay.redis_port = service.new_port
        await in_thread(partial(service.old.client_kill_filter, _type="pubsub"))
        await traffic.more_acks(20, timeout=30)
        try:
            await traffic.finish(timeout=10)
        except TimeoutError:
            missing = {name: len(lost) for name, lost in traffic.missing().items()}
            raise AssertionError(
                f"acknowledged, never delivered, untold: {missing}; {traffic.summary()}"
            ) from None
        print(f"\nreplica promoted by hand: {traffic.summary()}")
        traffic.check()
