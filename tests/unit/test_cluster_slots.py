"""Redis Cluster routing as pure data: slots, channels, slot maps, MOVED/ASK, seed lists."""

from __future__ import annotations

import pytest
from redis._parsers.base import BaseParser
from redis.exceptions import AskError, MovedError, ResponseError

from roomcast.broker import scripts
from roomcast.broker.cluster_slots import (
    SLOT_COUNT,
    Address,
    Redirect,
    SlotMap,
    redirect_of,
    room_of_channel,
    sharded_channel,
    slot_of,
)
from roomcast.broker.redis_cluster import parse_seeds
from roomcast.broker.redis_sentinel import parse_sentinels, primary_options


def test_known_slots() -> None:
    # Values from the Redis Cluster specification / CLUSTER KEYSLOT.
    assert slot_of(b"foo") == 12182
    assert slot_of(b"{user1000}.following") == slot_of(b"{user1000}.followers")
    assert slot_of(b"{}x") == slot_of(b"{}x")  # empty tag: the whole key is hashed


@pytest.mark.parametrize("room", ["lobby", "team-a.b:c@d_e", "x" * 64, "0"])
def test_channel_and_keys_of_a_room_share_its_slot(room: str) -> None:
    channel = sharded_channel(room)
    assert channel == f"rc:{{{room}}}".encode()
    assert room_of_channel(channel) == room
    assert {slot_of(key) for key in scripts.room_keys(room)} == {slot_of(channel)}
    assert slot_of(channel) == slot_of(room.encode())


def test_sharded_scripts_use_spublish_only() -> None:
    for classic, sharded in zip(scripts.CLASSIC.all, scripts.SHARDED.all, strict=True):
        assert "'PUBLISH'" not in sharded.source
        assert sharded.source == classic.source.replace("'PUBLISH'", "'SPUBLISH'")
    publishing = ("publish_message", "join", "leave", "reap")
    for name in publishing:
        classic_script = getattr(scripts.CLASSIC, name)
        sharded_script = getattr(scripts.SHARDED, name)
        assert "'PUBLISH'" in classic_script.source
        assert "'SPUBLISH'" in sharded_script.source
        assert classic_script.sha != sharded_script.sha


def _parsed(message: str) -> ResponseError:
    error = BaseParser.parse_error(message)  # type: ignore[no-untyped-call]  # unannotated in redis-py
    assert isinstance(error, ResponseError)
    return error


def test_moved_and_ask_from_redis_py_errors() -> None:
    moved = _parsed("MOVED 3999 127.0.0.1:6381")
    assert isinstance(moved, MovedError)
    assert redirect_of(moved) == Redirect("MOVED", 3999, Address("127.0.0.1", 6381))
    ask = _parsed("ASK 12 10.0.0.5:7000")
    assert isinstance(ask, AskError) and not isinstance(ask, MovedError)
    assert redirect_of(ask) == Redirect("ASK", 12, Address("10.0.0.5", 7000))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("MOVED 0 redis-1:6379", Redirect("MOVED", 0, Address("redis-1", 6379))),
        ("ASK 16383 [::1]:7001", Redirect("ASK", 16383, Address("::1", 7001))),
        ("NOSCRIPT No matching script", None),
        ("MOVED x h:1", None),
        ("MOVED 1 nohostport", None),
        ("ERR something MOVED", None),
    ],
)
def test_redirect_from_unclassified_error_text(text: str, expected: Redirect | None) -> None:
    assert redirect_of(ResponseError(text)) == expected


def test_non_errors_are_no_redirects() -> None:
    assert redirect_of(ValueError("MOVED 1 a:1")) is None


def test_slot_map_from_cluster_slots() -> None:
    reply = [
        [0, 5460, [b"127.0.0.1", 7000, b"id0"], [b"127.0.0.1", 7003, b"id3"]],
        [5461, 10922, [b"", 7001, b"id1"]],  # no announced host: the node that was asked
        [10923, 16383, ["10.0.0.2", 7002, "id2"]],
    ]
    slot_map = SlotMap.from_cluster_slots(reply, Address("192.168.1.9", 7001))
    assert slot_map.complete
    assert slot_map.owner(0) == slot_map.owner(5460) == Address("127.0.0.1", 7000)
    assert slot_map.owner(5461) == Address("192.168.1.9", 7001)
    assert slot_map.owner(16383) == Address("10.0.0.2", 7002)
    assert slot_map.primaries() == {
        Address("127.0.0.1", 7000),
        Address("192.168.1.9", 7001),
        Address("10.0.0.2", 7002),
    }
    same = SlotMap.from_cluster_slots(reply, Address("192.168.1.9", 7001))
    assert same == slot_map and hash(same) == hash(slot_map)


def test_slot_map_with_a_hole_is_incomplete() -> None:
    slot_map = SlotMap.from_ranges(
        [(0, 100, Address("a", 1)), (200, SLOT_COUNT - 1, Address("b", 2))]
    )
    assert not slot_map.complete
    assert slot_map.owner(150) is None
    with pytest.raises(ValueError):
        SlotMap.from_ranges([(0, SLOT_COUNT, Address("a", 1))])
    with pytest.raises(ValueError):
        SlotMap([None] * 10)


def test_address_parse() -> None:
    assert Address.parse("h:1") == Address("h", 1)
    assert str(Address("h", 2)) == "h:2"
    for bad in ("h", ":1", "h:x"):
        with pytest.raises(ValueError):
            Address.parse(bad)


def test_seed_list_reuses_the_first_urls_scheme_and_credentials() -> None:
    assert parse_seeds("redis://:pw@a:7000, b:7001 ,rediss://c:7002") == [
        "redis://:pw@a:7000",
        "redis://:pw@b:7001",
        "rediss://c:7002",
    ]
    assert parse_seeds("redis://a:1") == ["redis://a:1"]
    with pytest.raises(ValueError):
        parse_seeds(" , ")


def test_sentinel_helpers() -> None:
    assert parse_sentinels(["s1:26379", "[::1]:5000"]) == [("s1", 26379), ("::1", 5000)]
    assert primary_options(None) == {}
    options = primary_options("rediss://user:secret@ignored:1/2")
    assert options["password"] == "secret" and options["username"] == "user"
    assert options["db"] == 2 and options["ssl"] is True
    assert "host" not in options and "port" not in options
