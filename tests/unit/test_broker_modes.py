"""ROOMCAST_REDIS_MODE picks the broker; the node above it is the same in every mode."""

from __future__ import annotations

import pytest
from redis.asyncio.sentinel import MasterNotFoundError

from roomcast.app import Server
from roomcast.broker.errors import describe
from roomcast.broker.memory import MemoryBroker
from roomcast.broker.redis import RedisBroker
from roomcast.broker.redis_cluster import RedisClusterBroker
from roomcast.broker.redis_sentinel import RedisSentinelBroker
from roomcast.runtime.config import load_settings


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


def test_describe_names_the_exception_and_shortens_redis_py_client_reprs() -> None:
    assert describe(TimeoutError()) == "TimeoutError"  # a timeout's own text is empty
    client = (
        "<redis.asyncio.client.Redis(<redis.asyncio.connection.ConnectionPool("
        "<redis.asyncio.connection.Connection(db=0,password=<REDACTED>,retry=<Retry object at"
        " 0x1>,driver_info=DriverInfo(name='redis-py'),host={host},port={port},"
        "socket_timeout=1)>)>)>"
    )
    text = (
        "No master found for 'roomcast' : "
        + client.format(host="10.0.0.1", port=26379) + " - auth:AuthenticationError, "
        + client.format(host="10.0.0.2", port=26380) + " - network:ConnectionError"
    )  # fmt: skip
    assert describe(MasterNotFoundError(text)) == (
        "MasterNotFoundError: No master found for 'roomcast' : 10.0.0.1:26379 -"
        " auth:AuthenticationError, 10.0.0.2:26380 - network:ConnectionError"
    )
    assert describe(ValueError("x" * 2000)).endswith("x…")
    assert len(describe(ValueError("x" * 2000))) < 600


def test_sentinel_credentials_go_to_the_sentinels_and_the_url_to_the_primary() -> None:
    settings = load_settings(
        {
            "ROOMCAST_NODE_ID": "n1",
            "ROOMCAST_REDIS_MODE": "sentinel",
            "ROOMCAST_REDIS_SENTINELS": "127.0.0.1:1,127.0.0.1:2",
            "ROOMCAST_REDIS_SENTINEL_MASTER": "m",
            "ROOMCAST_REDIS_SENTINEL_USERNAME": "watcher",
            "ROOMCAST_REDIS_SENTINEL_PASSWORD": "sentinel-pw",
            "ROOMCAST_REDIS_URL": "redis://:primary-pw@ignored-host/2",
        }
    )
    broker = Server(settings).broker
    assert isinstance(broker, RedisSentinelBroker)
    for sentinel in broker._sentinel.sentinels:
        options = sentinel.connection_pool.connection_kwargs
        assert (options["username"], options["password"]) == ("watcher", "sentinel-pw")
        assert options["retry"]._retries == 0  # a refused password fails at once, not in ~4 s
    primary = broker._pool.connection_kwargs
    assert (primary["password"], primary["db"]) == ("primary-pw", 2)
