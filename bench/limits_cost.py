"""What the cluster-wide limits cost Redis: CPU per chat message of the publish script without
and with the room's bucket folded in, and of one client charge (sent at most once per client
and loop turn) of the two buckets a message spends (messages, bytes kept) in one script call.
Run: `.venv/bin/python bench/limits_cost.py`.

It starts its own redis-server on a free loopback port and stops it at the end. Each figure is
Redis' own CPU (INFO cpu) over 20,000 pipelined calls; the room's bucket never refuses here
(its rate is set high), so both variants do the whole publish.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

import redis
from redis.client import Pipeline
from roomcast_dev.devcluster import LocalCluster

from roomcast.broker import HistoryLimits, scripts
from roomcast.broker.redis import channel_for
from roomcast.wire import envelope, protocol

MESSAGES = 20_000
BATCH = 100
ROOM = "cost-room"


def cpu_seconds(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def publish_args() -> tuple[list[bytes], list[bytes]]:
    limits = HistoryLimits()
    seq, epoch, history, _ = scripts.room_keys(ROOM)
    prefix = protocol.chat_message_prefix(ROOM, "someone", "x" * 100, int(time.time() * 1000))
    far_deadline_ms = b"%d" % ((int(time.time()) + 3600) * 1000)
    args = [
        channel_for(ROOM), envelope.head(time.time()), prefix, b"%d" % limits.size,
        b"%d" % int(limits.ttl), b"%d" % int(limits.meta_ttl), b"e0e0e0e0e0e0",
        b"%d" % limits.bytes, far_deadline_ms,
    ]  # fmt: skip
    return [seq, epoch, history, scripts.history_bytes_key(ROOM)], args


def main() -> int:
    with LocalCluster(0, nginx=False) as cluster:
        client = redis.Redis.from_url(cluster.redis_url or "")
        plain = client.script_load(scripts.PUBLISH_MESSAGE.source)
        limited = client.script_load(scripts.CLASSIC.publish_message.source)
        charge = client.script_load(scripts.CHARGE.source)
        keys, args = publish_args()
        limited_keys = [*keys, scripts.room_rate_key(ROOM)]
        # The room's lifetime, no reserve, the bucket's rate and burst.
        limited_args = [*args, b"86400", b"0", b"1000000.0", b"1000000"]
        client_keys = [scripts.client_rate_key("sub:someone", kind) for kind in ("msg", "kept")]
        client_args = [1, 20.0, 40, 1, 1124, 64000.0, 512000, 512000]  # each: cost rate burst debt
        commands: tuple[tuple[str, Callable[[Pipeline], object]], ...] = (
            ("publish_message", lambda pipe: pipe.evalsha(plain, 4, *keys, *args)),
            (
                "publish_message_with_room_bucket",
                lambda pipe: pipe.evalsha(limited, 5, *limited_keys, *limited_args),
            ),
            (
                "client_charge_two_buckets",
                lambda pipe: pipe.evalsha(charge, 2, *client_keys, *client_args),
            ),
        )
        figures = {}
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
        "redis_cpu_us_per_call": {k: round(v, 2) for k, v in figures.items()},
        "room_bucket_extra_us": round(
            figures["publish_message_with_room_bucket"] - figures["publish_message"], 2
        ),
    }
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
