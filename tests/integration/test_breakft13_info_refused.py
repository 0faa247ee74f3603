"""A Redis that will not answer ``INFO`` (an ACL user without it, ``+@all -info``, or ``INFO``
renamed away): the node still connects and works, and since its links then cannot tell which
server they reached, the check that keeps a shard's two links on one server is off. Before,
silently; now each link says so in a warning when it connects."""

from __future__ import annotations

import asyncio
import logging
import tempfile

import pytest
from roomcast_dev.devcluster import ManagedProcess, find_binary, free_port

from roomcast.broker.redis import RedisBroker
from tests.support.wsclient import scaled

pytestmark = pytest.mark.integration

REFUSING = {
    "acl_without_info": (
        ["--user", "default", "off", "--user", "rc", "on", ">pw", "~*", "&*", "+@all", "-info"],
        "rc:pw@",
    ),
    "info_renamed": (["--rename-command", "INFO", "info-hidden-by-operator"], ""),
}


@pytest.mark.parametrize("setup", sorted(REFUSING))
async def test_a_redis_refusing_info_works_and_the_links_say_the_check_is_off(
    setup: str, caplog: pytest.LogCaptureFixture
) -> None:
    args, credentials = REFUSING[setup]
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="rc-info-") as workdir:
        argv = [find_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", workdir, *args]
        redis = ManagedProcess(f"redis-{setup}", argv)
        try:
            redis.wait_for_line(lambda line: "Ready to accept" in line, scaled(20))
            received: list[tuple[str, bytes]] = []
            heard, ready = asyncio.Event(), asyncio.Event()

            def on_message(room: str, payload: bytes) -> None:
                received.append((room, payload))
                heard.set()

            caplog.set_level(logging.WARNING, logger="roomcast.broker.redis")

            def on_state(up: bool) -> None:
                if up:
                    ready.set()

            url = f"redis://{credentials}127.0.0.1:{port}"
            broker = RedisBroker(url, on_message, on_state)
            await broker.start()
            try:
                await asyncio.wait_for(ready.wait(), scaled(5))
                await broker.subscribe("r")
                broker.publish("r", b"hello")
                await asyncio.wait_for(heard.wait(), scaled(5))
                assert received == [("r", b"hello")]
            finally:
                await broker.stop()
        finally:
            redis.stop()
    refused = [r for r in caplog.records if "INFO" in r.getMessage()]
    assert sorted(getattr(r, "link", "") for r in refused) == ["publisher", "subscriber"], [
        r.getMessage() for r in caplog.records
    ]
