"""The JSON wire protocol: parsing and validating client frames, encoding server events."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomcast.wire import protocol
from roomcast.wire.codes import ErrorCode
from roomcast.wire.protocol import (
    COMMAND_TYPES,
    MAX_OFFSET,
    History,
    Join,
    Leave,
    Message,
    Presence,
    ProtocolError,
    Refresh,
    Typing,
    complete_message,
    parse_command,
)
from roomcast.wire.recovery import Since

EXPECTED_TYPES = "join, leave, message, typing, history, presence, refresh"


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def rejected(text: str) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_command(text)
    return info.value


# The article's browser client, byte for byte.


def test_article_join_frame() -> None:
    command = parse_command('{"type":"join","room":"general","username":"john"}')
    assert command == Join(room="general", username="john")


def test_article_message_frame_ignores_client_timestamp() -> None:
    command = parse_command('{"type":"message","text":"hi","timestamp":123}')
    assert command == Message(text="hi", room=None)


def test_article_typing_frame() -> None:
    assert parse_command('{"type":"typing"}') == Typing(room=None)


# Every command type.


def test_join_with_room_and_username() -> None:
    command = parse_command(
        dumps({"type": "join", "room": "a.b:c@d-e_f", "username": "Zoë O'Neil"})
    )
    assert command == Join(room="a.b:c@d-e_f", username="Zoë O'Neil")


def test_leave_with_and_without_room() -> None:
    assert parse_command('{"type":"leave"}') == Leave(room=None)
    assert parse_command('{"type":"leave","room":"general"}') == Leave(room="general")


def test_message_with_room() -> None:
    command = parse_command('{"type":"message","text":"hello","room":"lobby"}')
    assert command == Message(text="hello", room="lobby")


def test_typing_with_room() -> None:
    assert parse_command('{"type":"typing","room":"lobby"}') == Typing(room="lobby")


def test_null_room_means_no_room() -> None:
    assert parse_command('{"type":"message","text":"x","room":null}') == Message("x", None)
    assert parse_command('{"type":"typing","room":null}') == Typing(None)


def test_command_types_are_the_wire_types() -> None:
    assert COMMAND_TYPES == (
        "join", "leave", "message", "typing", "history", "presence", "refresh",
    )  # fmt: skip


def test_unknown_fields_are_ignored() -> None:
    frame = {
        "type": "join",
        "room": "general",
        "username": "john",
        "extra": {"nested": [1, 2, 3]},
        "timestamp": 5,
        "color": None,
    }
    assert parse_command(dumps(frame)) == Join("general", "john")
    frame = {"type": "message", "text": "hi", "id": {"not": "an id"}, "reply_to": 7}
    assert parse_command(dumps(frame)) == Message("hi", None)


@pytest.mark.parametrize(
    ("raw", "request_id"),
    [("abc", "abc"), (7, 7), (-3, -3), ("x" * 64, "x" * 64), ("x" * 65, None), ("", None),
     (True, None), (2**54, None), (1.5, None), ([1], None), (None, None)],
)  # fmt: skip
def test_request_ids_are_kept_when_valid_and_ignored_otherwise(
    raw: object, request_id: object
) -> None:
    frame = {"type": "message", "text": "hi", "id": raw}
    assert parse_command(dumps(frame)) == Message("hi", None, request_id)  # type: ignore[arg-type]


def test_errors_carry_the_id_of_the_frame_that_caused_them() -> None:
    with pytest.raises(ProtocolError) as refused:
        parse_command(dumps({"type": "join", "room": "bad room", "id": "j1"}))
    assert (refused.value.code, refused.value.request_id) == ("invalid_room", "j1")
    with pytest.raises(ProtocolError) as refused:
        parse_command(dumps({"type": "dance", "id": 9}))
    assert refused.value.request_id == 9
    assert protocol.error("x", "y", "r", "j1") == (
        b'{"type":"error","code":"x","reason":"y","room":"r","id":"j1"}'
    )
    assert protocol.ack("r", 5, "e", 12) == (
        b'{"type":"ack","id":5,"room":"r","epoch":"e","offset":12}'
    )


def test_whitespace_around_json_is_fine() -> None:
    assert parse_command('  \n{ "type" : "typing" }\n ') == Typing(None)


def test_history_and_presence() -> None:
    assert parse_command('{"type":"history"}') == History(room=None, limit=None)
    assert parse_command('{"type":"history","room":"r","limit":1}') == History("r", 1)
    assert parse_command('{"type":"history","limit":10000}') == History(None, 10000)
    assert parse_command('{"type":"history","limit":null}') == History(None, None)
    assert parse_command('{"type":"presence"}') == Presence(room=None)
    assert parse_command('{"type":"presence","room":"r"}') == Presence(room="r")


@pytest.mark.parametrize("limit", [0, -1, 10001, 1.5, 2.0, "5", True, False, [], {}])
def test_invalid_history_limit(limit: Any) -> None:
    error = rejected(dumps({"type": "history", "limit": limit}))
    assert error.code == ErrorCode.INVALID_LIMIT.value == "invalid_limit"
    assert error.reason == "'limit' must be a whole number 1-10000"


def test_join_with_since() -> None:
    frame: dict[str, Any] = {
        "type": "join",
        "room": "general",
        "username": "john",
        "since": {"offset": 42, "epoch": "a1b2c3", "extra": 1},
    }
    assert parse_command(dumps(frame)) == Join("general", "john", Since(offset=42, epoch="a1b2c3"))
    frame["since"] = {"offset": 0, "epoch": "e"}
    assert parse_command(dumps(frame)) == Join("general", "john", Since(0, "e"))
    frame["since"] = {"offset": MAX_OFFSET, "epoch": "e" * 64}
    assert parse_command(dumps(frame)) == Join("general", "john", Since(MAX_OFFSET, "e" * 64))
    frame["since"] = None
    assert parse_command(dumps(frame)) == Join("general", "john", None)
    assert MAX_OFFSET == 2**53


@pytest.mark.parametrize("since", ["x", 5, [], [1, "e"], True])
def test_since_must_be_object(since: Any) -> None:
    frame = {"type": "join", "room": "general", "username": "john", "since": since}
    error = rejected(dumps(frame))
    assert error.code == ErrorCode.INVALID_SINCE.value == "invalid_since"
    assert error.reason == '\'since\' must be {"offset": N, "epoch": E}'


@pytest.mark.parametrize(
    "since",
    [
        {},
        {"epoch": "e"},
        {"offset": 1},
        {"offset": -1, "epoch": "e"},
        {"offset": 1.0, "epoch": "e"},
        {"offset": "1", "epoch": "e"},
        {"offset": True, "epoch": "e"},
        {"offset": 2**53 + 1, "epoch": "e"},
        {"offset": 1, "epoch": ""},
        {"offset": 1, "epoch": "e" * 65},
        {"offset": 1, "epoch": 5},
        {"offset": 1, "epoch": None},
    ],
)
def test_invalid_since_fields(since: dict[str, Any]) -> None:
    frame = {"type": "join", "room": "general", "username": "john", "since": since}
    error = rejected(dumps(frame))
    assert error.code == ErrorCode.INVALID_SINCE
    assert error.reason == (
        "'since' needs a whole 'offset' >= 0 and the 'epoch' string from a message or joined"
    )


# Text is passed through unchanged.


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain",
        "héllo wörld",
        "😀👍🏽 family: 👨‍👩‍👧",
        "she said \"hi\" and 'bye'",
        "line1\nline2\r\nline3\ttab",
        "<script>alert(1)</script>",
        "back\\slash and \u0000 nul",
        "中文 日本語 한국어 العربية",
        "x" * 10_000,
    ],
)
def test_message_text_passes_through_unchanged(text: str) -> None:
    command = parse_command(dumps({"type": "message", "text": text}))
    assert isinstance(command, Message)
    assert command.text == text
    # And survives encoding into the event every member receives.
    prefix = protocol.chat_message_prefix("general", "john", command.text, 1)
    event = orjson.loads(complete_message(prefix, 7, "ep0ch"))
    assert event["text"] == text


def test_escaped_unicode_is_decoded() -> None:
    command = parse_command('{"type":"message","text":"\\u00e9\\ud83d\\ude00\\n\\""}')
    assert command == Message(text='é😀\n"', room=None)


# Every error code.


@pytest.mark.parametrize("text", ["", "not json", "{", '{"type":"join"', "{'type':'join'}", "[1,]"])
def test_invalid_json(text: str) -> None:
    error = rejected(text)
    assert error.code == ErrorCode.INVALID_JSON.value == "invalid_json"
    assert error.reason == "frame is not valid JSON"
    assert error.room is None


@pytest.mark.parametrize("text", ["[]", '["join"]', "1", '"join"', "null", "true", "3.5"])
def test_non_object_is_invalid_frame(text: str) -> None:
    error = rejected(text)
    assert error.code == ErrorCode.INVALID_FRAME.value == "invalid_frame"
    assert error.reason == "frame must be a JSON object"


@pytest.mark.parametrize("kind", [None, 1, 1.5, True, [], ["join"], {"a": 1}])
def test_non_string_type_is_invalid_frame(kind: Any) -> None:
    error = rejected(dumps({"type": kind, "room": "general", "username": "john"}))
    assert error.code == ErrorCode.INVALID_FRAME
    assert error.reason == "'type' must be a string"


def test_missing_type_is_invalid_frame() -> None:
    error = rejected('{"room":"general"}')
    assert error.code == ErrorCode.INVALID_FRAME
    assert error.reason == "'type' must be a string"


@pytest.mark.parametrize("kind", ["", "JOIN", "Message", "chat", "ping", " join"])
def test_unknown_type(kind: str) -> None:
    error = rejected(dumps({"type": kind}))
    assert error.code == ErrorCode.UNKNOWN_TYPE.value == "unknown_type"
    assert error.reason == f"unknown type {kind!r}; expected one of {EXPECTED_TYPES}"


def test_unknown_type_reason_is_shortened() -> None:
    kind = "x" * 100
    error = rejected(dumps({"type": kind}))
    assert error.code == ErrorCode.UNKNOWN_TYPE
    shown = "x" * 32 + "…"
    assert error.reason == f"unknown type {shown!r}; expected one of {EXPECTED_TYPES}"


def test_join_requires_room() -> None:
    error = rejected('{"type":"join","username":"john"}')
    assert error.code == ErrorCode.INVALID_ROOM.value == "invalid_room"
    assert error.reason == "'room' is required"
    error = rejected('{"type":"join","room":null,"username":"john"}')
    assert error.code == ErrorCode.INVALID_ROOM


@pytest.mark.parametrize(
    "room",
    [
        "",
        "a" * 65,
        "has space",
        "slash/room",
        "émoji😀",
        "tab\t",
        "new\nline",
        5,
        1.0,
        True,
        [],
        {},
    ],
)
@pytest.mark.parametrize("kind", ["join", "leave", "message", "typing", "history", "presence"])
def test_invalid_room(kind: str, room: Any) -> None:
    frame = {"type": kind, "room": room, "username": "john", "text": "hi"}
    error = rejected(dumps(frame))
    assert error.code == ErrorCode.INVALID_ROOM
    assert error.reason == "'room' must be 1-64 characters of A-Z a-z 0-9 _ . : @ -"


def test_room_length_boundaries() -> None:
    assert parse_command(dumps({"type": "typing", "room": "a"})) == Typing("a")
    assert parse_command(dumps({"type": "typing", "room": "a" * 64})) == Typing("a" * 64)


@pytest.mark.parametrize(
    "username",
    [None, "", "a" * 33, "<b>", "tab\t", "new\nline", "semi;colon", "😀", 7, [], {"n": "x"}],
)
def test_invalid_username(username: Any) -> None:
    error = rejected(dumps({"type": "join", "room": "general", "username": username}))
    assert error.code == ErrorCode.INVALID_USERNAME.value == "invalid_username"
    assert error.reason == "'username' must be 1-32 letters, digits, spaces or . @ - _ '"


def test_missing_username_is_left_to_the_node() -> None:
    # With authentication on the token names the user, so the parser accepts a join without
    # one; the node refuses it in open mode (tests/unit/test_node.py).
    command = parse_command('{"type":"join","room":"general"}')
    assert isinstance(command, Join) and command.username is None


@pytest.mark.parametrize("username", [" ", "   ", " " * 32])
def test_blank_username(username: str) -> None:
    error = rejected(dumps({"type": "join", "room": "general", "username": username}))
    assert error.code == ErrorCode.INVALID_USERNAME
    assert error.reason == "'username' must not be blank"


@pytest.mark.parametrize(
    "username", ["j", "a" * 32, "Jean-Luc", "o'brien", "x@y.z", "José", "李雷"]
)
def test_valid_usernames(username: str) -> None:
    command = parse_command(dumps({"type": "join", "room": "general", "username": username}))
    assert command == Join("general", username)


@pytest.mark.parametrize("text", [None, 1, 1.5, False, [], {"t": "x"}])
def test_invalid_text(text: Any) -> None:
    error = rejected(dumps({"type": "message", "text": text}))
    assert error.code == ErrorCode.INVALID_TEXT.value == "invalid_text"
    assert error.reason == "'text' must be a string"


def test_missing_text() -> None:
    error = rejected('{"type":"message"}')
    assert error.code == ErrorCode.INVALID_TEXT


def test_protocol_error_carries_fields() -> None:
    error = ProtocolError("some_code", "some reason", "room1")
    assert (error.code, error.reason, error.room, str(error)) == (
        "some_code",
        "some reason",
        "room1",
        "some reason",
    )


# Server events.


def message_event(room: str, username: str, text: str, ms: int, offset: int, epoch: str) -> bytes:
    return complete_message(protocol.chat_message_prefix(room, username, text, ms), offset, epoch)


def test_room_events_are_json_with_room() -> None:
    events = {
        "joined": protocol.joined("general", "john", "ep", 3),
        "left": protocol.left("general"),
        "user_joined": protocol.user_joined("general", "john"),
        "user_left": protocol.user_left("general", "john"),
        "message": message_event("general", "john", "hi", 1_700_000_000_123, 9, "ep"),
        "typing": protocol.typing("general", "john"),
        "history": protocol.history("general", "ep", 0, []),
        "presence": protocol.presence("general", {}),
    }
    for kind, raw in events.items():
        event = json.loads(raw)
        assert event["type"] == kind
        assert event["room"] == "general"
    assert json.loads(events["joined"]) == {
        "type": "joined",
        "room": "general",
        "username": "john",
        "epoch": "ep",
        "offset": 3,
    }
    assert json.loads(events["left"]) == {"type": "left", "room": "general"}
    assert json.loads(events["user_joined"]) == {
        "type": "user_joined",
        "room": "general",
        "username": "john",
    }
    assert json.loads(events["user_left"]) == {
        "type": "user_left",
        "room": "general",
        "username": "john",
    }
    assert json.loads(events["message"]) == {
        "type": "message",
        "room": "general",
        "username": "john",
        "text": "hi",
        "timestamp": 1_700_000_000_123,
        "offset": 9,
        "epoch": "ep",
    }
    assert json.loads(events["typing"]) == {
        "type": "typing",
        "room": "general",
        "username": "john",
    }


def test_joined_with_recovery_fields() -> None:
    assert json.loads(protocol.joined("r", "u", "ep", 5, True)) == {
        "type": "joined",
        "room": "r",
        "username": "u",
        "epoch": "ep",
        "offset": 5,
        "recovered": True,
    }
    assert json.loads(protocol.joined("r", "u", "ep", 5, False, "too_old")) == {
        "type": "joined",
        "room": "r",
        "username": "u",
        "epoch": "ep",
        "offset": 5,
        "recovered": False,
        "reason": "too_old",
    }


def test_message_prefix_is_completed_into_json() -> None:
    prefix = protocol.chat_message_prefix("r", "u", "x", 1)
    assert prefix.endswith(b',"offset":')
    assert complete_message(prefix, 12, "abc") == (
        b'{"type":"message","room":"r","username":"u","text":"x","timestamp":1,'
        b'"offset":12,"epoch":"abc"}'
    )


def test_history_event_splices_stored_messages() -> None:
    stored = [
        message_event("r", "a", "one", 1, 1, "ep"),
        message_event("r", "b", 'two "quoted"', 2, 2, "ep"),
    ]
    event = json.loads(protocol.history("r", "ep", 2, stored))
    assert event == {
        "type": "history",
        "room": "r",
        "epoch": "ep",
        "offset": 2,
        "messages": [json.loads(m) for m in stored],
    }
    assert json.loads(protocol.history("r", "ep", 0, []))["messages"] == []


def test_presence_event_sorted_by_username() -> None:
    event = json.loads(protocol.presence("r", {"zed": ["z"], "amy": ["a", "a"], "Bob": ["b"]}))
    assert event == {
        "type": "presence",
        "room": "r",
        "members": [
            {"username": "Bob", "connections": 1, "user_ids": {"b": 1}},
            {"username": "amy", "connections": 2, "user_ids": {"a": 2}},
            {"username": "zed", "connections": 1, "user_ids": {"z": 1}},
        ],
    }


def test_presence_entries_tell_namesakes_apart_by_user_id() -> None:
    """A superset: the name and its connections as ever, then how many each user under that
    name holds; a connection whose id is not known (a previous release's node wrote it) is
    counted in connections only. Pages are the same entries."""
    members: dict[str, list[str | None]] = {"alice": ["id-b", None, "id-a", "id-b"], "bob": [None]}
    entries = json.loads(protocol.presence("r", members))["members"]
    assert entries == [
        {"username": "alice", "connections": 4, "user_ids": {"id-a": 1, "id-b": 2}},
        {"username": "bob", "connections": 1, "user_ids": {}},
    ]
    assert list(entries[0]) == ["username", "connections", "user_ids"]
    page = json.loads(protocol.presence_page("r", members, 2, 5, None))
    assert page["members"] == entries


def test_error_event_with_and_without_room() -> None:
    assert json.loads(protocol.error("not_joined", "join a room first")) == {
        "type": "error",
        "code": "not_joined",
        "reason": "join a room first",
    }
    assert json.loads(protocol.error("too_many_rooms", "max", "r1")) == {
        "type": "error",
        "code": "too_many_rooms",
        "reason": "max",
        "room": "r1",
    }


def test_welcome_event() -> None:
    assert json.loads(protocol.welcome("node-1", "node-1-abc-1", 16, 65536, "u-1")) == {
        "type": "welcome",
        "node": "node-1",
        "connection": "node-1-abc-1",
        "max_rooms": 16,
        "max_frame_bytes": 65536,
        "user_id": "u-1",
    }


def test_events_about_a_user_carry_its_user_id_after_the_article_fields() -> None:
    """A superset: the article's fields as they were, then user_id (none given: none sent)."""
    assert json.loads(protocol.user_joined("r", "ann", "id-a")) == {
        "type": "user_joined", "room": "r", "username": "ann", "user_id": "id-a",
    }  # fmt: skip
    assert json.loads(protocol.user_left("r", "ann", "id-a"))["user_id"] == "id-a"
    assert json.loads(protocol.typing("r", "ann", "id-a"))["user_id"] == "id-a"
    assert json.loads(protocol.joined("r", "ann", "ep", 3, user_id="id-a"))["user_id"] == "id-a"
    message = protocol.complete_message(
        protocol.chat_message_prefix("r", "ann", "hi", 5, None, "id-a"), 1, "ep"
    )
    assert list(json.loads(message)) == [
        "type", "room", "username", "text", "timestamp", "user_id", "offset", "epoch",
    ]  # fmt: skip
    assert "user_id" not in json.loads(protocol.user_joined("r", "ann"))
    assert protocol.user_joined("r", "ann", "id-a").startswith(b'{"type":"user_joined",')


def test_encoded_events_are_utf8_bytes() -> None:
    raw = message_event("r", "Zoë", 'quote " and \n 😀', 0, 1, "ep")
    assert isinstance(raw, bytes)
    assert json.loads(raw.decode("utf-8"))["text"] == 'quote " and \n 😀'
    assert json.loads(raw.decode("utf-8"))["username"] == "Zoë"


# Property tests: nothing but ProtocolError escapes parse_command.

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)

command_like = st.fixed_dictionaries(
    {"type": st.sampled_from([*COMMAND_TYPES, "other"]) | json_values},
    optional={
        "room": st.sampled_from(["general", "", "a b"]) | json_values,
        "username": st.sampled_from(["john", " ", ""]) | json_values,
        "text": json_values,
        "limit": st.integers(-2, 10_002) | json_values,
        "since": st.fixed_dictionaries(
            {},
            optional={
                "offset": st.integers(-1, 2**53 + 1) | json_values,
                "epoch": st.text(max_size=70) | json_values,
            },
        )
        | json_values,
    },
)


def check_parse(text: str) -> None:
    try:
        command = parse_command(text)
    except ProtocolError as exc:
        assert exc.code in {
            ErrorCode.INVALID_JSON,
            ErrorCode.INVALID_FRAME,
            ErrorCode.UNKNOWN_TYPE,
            ErrorCode.INVALID_ROOM,
            ErrorCode.INVALID_USERNAME,
            ErrorCode.INVALID_TEXT,
            ErrorCode.INVALID_SINCE,
            ErrorCode.INVALID_LIMIT,
            ErrorCode.INVALID_TOKEN,
        }
        assert isinstance(exc.reason, str)
        assert exc.reason
    else:
        assert isinstance(command, Join | Leave | Message | Typing | History | Presence | Refresh)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_arbitrary_text_only_raises_protocol_error(text: str) -> None:
    check_parse(text)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_parse_arbitrary_json_only_raises_protocol_error(value: Any) -> None:
    check_parse(dumps(value))


@settings(max_examples=300, deadline=None)
@given(command_like)
def test_parse_command_shaped_json_only_raises_protocol_error(value: dict[str, Any]) -> None:
    check_parse(dumps(value))
    check_parse(json.dumps(value))  # ASCII-escaped variant
