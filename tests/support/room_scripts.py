"""The node's room scripts run by a test straight on a redis-server, with the arguments the node
sends: to set a room up, or to see what a script does to its keys, without a node."""

from __future__ import annotations

import json
import time

import redis

from roomcast.broker import scripts
from tests.support.wsclient import scaled


def text_prefix(text: str) -> bytes:
    """The stored event of a message with ``text`` up to its offset, as the node sends it."""
    return json.dumps({"text": text})[:-1].encode()


def publish_message(
    client: redis.Redis, room: str, text: str, epoch_candidate: str
) -> tuple[int, str]:
    """The fenced publish script for ``text`` in ``room``: its offset and the room's epoch."""
    seq, epoch_key, history, _ = scripts.room_keys(room)
    deadline = int(time.time() * 1000) + int(scaled(5) * 1000)
    offset, epoch = client.eval(
        scripts.FENCED.publish_message.source,
        5,
        seq,
        epoch_key,
        history,
        scripts.history_bytes_key(room),
        scripts.room_rate_key(room),
        f"rc:{{{room}}}".encode(),
        b"0\n",
        text_prefix(text) + b',"offset":',
        100,  # history size
        600,  # history ttl
        86400,  # meta ttl
        epoch_candidate,
        1 << 20,  # history bytes
        deadline,
        0,  # the reserve, the room's rate and burst: not what these tests are about
        1000,
        1000,
    )
    return int(offset), epoch.decode()
