"""ROOMCAST_REDIS_MODE picks the broker; the node above it is the same in every mode."""

from __future__ import annotations

import pytest

from roomcast.app import Server
from roomcast.broker.memory import MemoryBroker
from roomcast.broker.redis import RedisBroker
from roomcast.broker.redis_cluster import RedisClusterBroker
from roomcast.broker.redis_sentinel import RedisSentinelBroker
from roomcast.config import load_settings


@pytest.mark.parametrize(
    ("env", "kind"),
    [
        ({}, MemoryBroker),
        ({"ROOMCAST_REDIS_URL": "redis://127.0.0.1:1/0"}, RedisBroker),
        (
            {"ROOMCAST_REDIS_MODE": "cluster", "ROOMCAST_REDIS_URL": "redis://127.0.0.1:1,h:2"},
            RedisClusterBroker,
        ),
        (
            {
                "ROOMCAST_REDIS_MODE": "sentinel",
                "ROOMCAST_REDIS_SENTINELS": "127.0.0.1:1",
                "ROOMCAST_REDIS_SENTINEL_MASTER": "m",
            },
            RedisSentinelBroker,
        ),
    ],
)
def test_mode_selects_the_broker(env: dict[str, str], kind: type) -> None:
    server = Server(load_settings(dict(env, ROOMCAST_NODE_ID="n1")))
    assert type(server.broker) is kind
    assert not server.broker.ready  # nothing started, nothing connected
