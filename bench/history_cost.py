"""What offsets and history cost in Redis: memory per room at the default N, and Redis CPU per
message of the publish script versus a plain PUBLISH. Run: `.venv/bin/python bench/history_cost.py`.

It starts its own redis-server on a free loopback port and stops it at the end.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

import redis
from redis.client import Pipeline
from roomcast_dev.devcluster import LocalCluster

from roomcast.broker import HistoryLimits, presence_fields, scripts
from roomcast.broker.redis import channel_for
from roomcast.wire import envelope, protocol

MESSAGES = 20_000
BATCH = 100


def cpu_seconds(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def memory_of(client: redis.Redis, key: bytes) -> int:
    used = client.memory_usage(key)
    assert used is not None, key  # None only for a missing key; these were just written
    return used


def publish_args(room: str, text: str) -> tuple[list[bytes], list[bytes]]:
    limits = HistoryLimits()
    seq, epoch, history, _ = scripts.room_keys(room)
    prefix = protocol.chat_message_prefix(room, "someone", text, int(time.time() * 1000))
    args = [
        channel_for(room), envelope.head(time.time()), prefix, b"%d" % limits.size,
        b"%d" % int(limits.ttl), b"%d" % int(limits.meta_ttl), b"e0e0e0e0e0e0",
    ]  # fmt: skip
    return [seq, epoch, history], args


def main() -> int:
    text = "x" * 100  # a typical short chat line
    with LocalCluster(0, nginx=False) as cluster:
        client = redis.Redis.from_url(cluster.redis_url or "")
        sha = client.script_load(scripts.PUBLISH_MESSAGE.source)
        # Memory of one room holding the default N messages, plus a 10-member presence hash.
        keys, args = publish_args("memory-room", text)
        for _ in range(HistoryLimits().size):
            client.evalsha(sha, 3, *keys, *args)
        presence = scripts.room_keys("memory-room")[3]
        # Each member's field holds its user_id (22 characters) after its id, as nodes write it.
        client.hset(
            presence,
            mapping={
                presence_fields.field(f"node-1-abcdef-{i:x}", f"{i:022d}"): f"user{i}"
                for i in range(10)
            },
        )
        memory = {key.decode(): memory_of(client, key) for key in (*keys, presence)}
        # CPU per message: plain PUBLISH of the same bytes versus the offset+history script.
        keys, args = publish_args("cpu-room", text)
        payload = args[1] + b"1\n" + args[2] + b'1,"epoch":"e0e0e0e0e0e0"}'
        figures = {}
        commands: tuple[tuple[str, Callable[[Pipeline], object]], ...] = (
            ("publish", lambda pipe: pipe.publish(args[0], payload)),
            ("publish_message_script", lambda pipe: pipe.evalsha(sha, 3, *keys, *args)),
        )
        for name, command in commands:
            before = cpu_seconds(client)
            for _ in range(MESSAGES // BATCH):
                pipe = client.pipeline(transaction=False)
                for _ in range(BATCH):
                    command(pipe)
                pipe.execute()
            figures[name] = (cpu_seconds(client) - before) / MESSAGES * 1e6
        client.close()
    result = {
        "history_size": HistoryLimits().size,
        "text_bytes": len(text),
        "redis_bytes_per_room": sum(memory.values()),
        "redis_bytes_by_key": memory,
        "redis_cpu_us_per_message": {k: round(v, 2) for k, v in figures.items()},
        "extra_redis_cpu_us_per_message": round(
            figures["publish_message_script"] - figures["publish"], 2
        ),
    }
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
