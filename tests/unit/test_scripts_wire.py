"""The Lua scripts build wire bytes inside Redis; these tests tie every literal they splice to the
Python definitions in ``roomcast.wire``, so the two cannot drift apart.

A tiny evaluator of the scripts' string concatenations (``a .. 'lit' .. b``) rebuilds what Redis
would produce, and the result is compared byte for byte with what the wire modules build.
"""

from __future__ import annotations

import re

import orjson

from roomcast.broker import presence_fields, scripts
from roomcast.wire import envelope, protocol
from roomcast.wire.codes import RecoveryStatus

LUA_STRING = re.compile(r"'((?:[^'\\]|\\.)*)'")


def lua_concat(expression: str, values: dict[str, str]) -> bytes:
    """Evaluate a Lua ``..`` chain of string literals and named values."""
    out = b""
    for part in (p.strip() for p in expression.split("..")):
        literal = LUA_STRING.fullmatch(part)
        if literal:
            out += literal.group(1).replace("\\\\n", "\n").replace("\\n", "\n").encode()
        else:
            out += values[part].encode()
    return out


def assignment(source: str, name: str) -> str:
    match = re.search(rf"local {name} = (.+)", source)
    assert match, f"no `local {name} = ...` in the script"
    return match.group(1)


def test_published_message_completes_the_protocols_json() -> None:
    prefix = protocol.chat_message_prefix("lobby", "ann", 'say "hi"\n', 1_700_000_000_000)
    built = lua_concat(
        assignment(scripts.PUBLISH_MESSAGE.source, "message"),
        {"ARGV[3]": prefix.decode(), "offset": "42", "epoch": "e-1"},
    )
    assert built == protocol.complete_message(prefix, 42, "e-1")
    assert orjson.loads(built) == {
        "type": "message", "room": "lobby", "username": "ann", "text": 'say "hi"\n',
        "timestamp": 1_700_000_000_000, "offset": 42, "epoch": "e-1",
    }  # fmt: skip


def test_published_envelope_is_what_nodes_unpack() -> None:
    head = envelope.head(123.5, "conn-1")
    publish = re.search(r"redis.call\('PUBLISH', ARGV\[1\], (.+)\)", scripts.PUBLISH_MESSAGE.source)
    assert publish
    event = b'{"type":"message"}'
    payload = head + lua_concat(publish.group(1), {"ARGV[2]": "", "offset": "7", "message": ""})
    unpacked = envelope.unpack(payload + event)
    assert (unpacked.offset, unpacked.exclude, unpacked.event) == (7, "conn-1", event)


def test_reaped_members_leave_with_the_protocols_user_left() -> None:
    source = scripts.REAP.source
    named = lua_concat(assignment(source, "event"), {"ARGV[4]": "lobby", "username": "ann"})
    with_id = re.search(r"event = (event \.\. .+)", source)
    publish = re.search(r"redis.call\('PUBLISH', ARGV\[1\], (.+)\)", source)
    assert with_id and publish
    # The user_id is what follows the separator in the member's presence field.
    assert f"string.match(member, '\\{presence_fields.SEPARATOR[0]}(" in source
    for user_id in (None, "Zm9vYmFyLWlkXzEyMzQ1Ng"):
        event = named
        if user_id is not None:
            event = lua_concat(with_id.group(1), {"event": named.decode(), "user_id": user_id})
        payload = envelope.head(1.0) + lua_concat(
            publish.group(1), {"ARGV[2]": "", "event": event.decode()}
        )
        unpacked = envelope.unpack(payload)
        assert unpacked.event == protocol.user_left("lobby", "ann", user_id), user_id
        assert unpacked.offset == 0  # unsequenced: not in history


def test_join_statuses_are_the_recovery_statuses() -> None:
    returned = set(re.findall(r"return \{epoch, latest, '(\w+)'", scripts.JOIN.source))
    assert returned == {
        RecoveryStatus.NOT_REQUESTED,
        RecoveryStatus.EPOCH_CHANGED,
        RecoveryStatus.RECOVERED,
        RecoveryStatus.TOO_OLD,
    }
    for status in returned:
        RecoveryStatus(status)  # raises for a string the enum does not know


def test_every_script_touching_a_rooms_sequence_is_fenced_in_sentinel_mode() -> None:
    fenced = {s.name: s.source for s in scripts.FENCED.all}
    for name in ("publish_message", "join", "history", "find_message"):
        assert fenced[name + "_fenced"].startswith(scripts._LINEAGE_FENCE), name
    # And what is fenced is what is really sent: the publish script behind the room's limit.
    assert scripts.CLASSIC.publish_message.source in scripts.FENCED.publish_message.source
    assert scripts.FENCED.publish_message.source.endswith(scripts._LINEAGE_KEEP)


def test_cluster_scripts_touching_a_rooms_sequence_are_fenced_and_sharded() -> None:
    fenced = {s.name: s.source for s in scripts.CLUSTER_FENCED.all}
    for name in ("publish_message", "join", "history", "find_message"):
        source = fenced[name + "_fenced_sharded"]
        assert source.startswith(scripts._CLUSTER_LINEAGE_FENCE), name
        assert "master_replid2" in source and "'PUBLISH'" not in source, name
        # A primary restarted on an older snapshot, no failover: told by its own node id.
        assert "redis.pcall('CLUSTER', 'MYID')" in source, name
    assert scripts.CLUSTER_FENCED.publish_message.source.endswith(scripts._LINEAGE_KEEP)
