"""An operator (or an ``allkeys-*`` eviction policy) deletes a room's offset counter while a
message's reply is lost on its way back: the node looks the message up in history before it
answers the sender, and the lookup must not say "surely never ran" when it can no longer tell.

On main the lookup read a missing counter as offset 0, found nothing after the offset the node
knew, and answered ``absent``: the sender was told ``unavailable`` (never published, safe to
send again) for a message that ran, was kept in history and was delivered live to every
member. A real redis-server runs the scripts exactly as the node sends them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from roomcast_dev.devcluster import LocalCluster

from roomcast.broker import scripts
from tests.support.room_scripts import publish_message, text_prefix

pytestmark = pytest.mark.integration

ROOM = "keys-deleted"
SEQ, EPOCH, HISTORY, _ = scripts.room_keys(ROOM)


@pytest.fixture
def admin() -> Iterator[redis.Redis]:
    with LocalCluster(0, nginx=False) as holder:
        client = redis.Redis(port=holder.redis_port)
        try:
            yield client
        finally:
            client.close()


def publish(client: redis.Redis, text: str) -> tuple[int, str]:
    return publish_message(client, ROOM, text, uuid.uuid4().hex[:12])


def find(client: redis.Redis, text: str, epoch: str, known: int) -> list[bytes]:
    found: list[bytes] = client.eval(
        scripts.FENCED.find_message.source, 3, SEQ, EPOCH, HISTORY, text_prefix(text), epoch, known
    )
    return found


def test_lookup_after_the_counter_was_deleted_never_answers_absent(admin: redis.Redis) -> None:
    publish(admin, "a")
    known, epoch = publish(admin, "b")  # the last offset the node saw before sending "c"
    offset, _ = publish(admin, "c")  # ran; its reply is lost
    assert find(admin, "c", epoch, known) == [b"found", offset, epoch.encode()]
    assert find(admin, "never sent", epoch, known) == [b"absent"]

    admin.delete(SEQ)  # the history still holds "c"; the epoch is still there
    assert find(admin, "c", epoch, known) == [b"unknown"]
    admin.delete(HISTORY)  # and with the history gone too (evicted first: shorter ttl)
    assert find(admin, "c", epoch, known) == [b"unknown"]
    # The room's next message starts a new epoch, as before.
    assert publish(admin, "d")[1] != epoch
