"""Frames of many JSON values are refused after their parse, whatever field holds them; the
characters of a string are never counted (wire.frame_values)."""

from __future__ import annotations

import json

import pytest

from roomcast.wire import api
from roomcast.wire.codes import ErrorCode
from roomcast.wire.frame_values import COUNTED_FROM_CHARS, MAX_FRAME_VALUES
from roomcast.wire.protocol import CostlyFrame, Message, ProtocolError, parse_command

LONG_TEXT = "x" * COUNTED_FROM_CHARS


@pytest.mark.parametrize(
    "pad",
    [
        [[] for _ in range(MAX_FRAME_VALUES)],  # one array of many
        [[[] for _ in range(MAX_FRAME_VALUES)]],  # the same one level down
        {str(i): {} for i in range(MAX_FRAME_VALUES)},  # an object of many members
        [0] * 2_000,  # many numbers
    ],
)
def test_a_frame_of_many_values_is_refused_as_costly(pad: object) -> None:
    frame = json.dumps({"type": "message", "text": LONG_TEXT, "pad": pad, "id": 7})
    with pytest.raises(CostlyFrame) as refused:
        parse_command(frame)
    assert refused.value.code == ErrorCode.INVALID_FRAME


def test_many_top_level_fields_are_refused_as_costly() -> None:
    fields = {f"f{i}": 0 for i in range(MAX_FRAME_VALUES)}
    frame = json.dumps({"type": "typing", "text": LONG_TEXT, **fields})
    with pytest.raises(CostlyFrame):
        parse_command(frame)


def test_brackets_and_commas_inside_a_text_are_not_counted() -> None:
    text = "[[], {}, [1, 2]], " * 4_000
    frame = json.dumps({"type": "message", "text": text, "client": {"v": [1, 2, 3]}})
    command = parse_command(frame)
    assert isinstance(command, Message) and command.text == text


def test_short_frames_are_not_counted() -> None:
    """Under COUNTED_FROM_CHARS a frame can hold little: not counted (the hot path)."""
    frame = json.dumps({"type": "typing", "pad": [[] for _ in range(MAX_FRAME_VALUES + 1)]})
    assert len(frame) <= COUNTED_FROM_CHARS
    parse_command(frame)


JSON = "application/json"


def test_an_api_body_of_many_values_is_refused_as_costly() -> None:

    body = json.dumps({"text": LONG_TEXT, "username": "u", "pad": [[]] * 2_000}).encode()
    with pytest.raises(api.CostlyBody) as refused:
        api.parse_posted_message(JSON, body)
    assert (refused.value.status, refused.value.code) == (400, ErrorCode.INVALID_FRAME)


def test_a_broadcast_to_its_most_rooms_is_not_costly() -> None:

    rooms = [f"room-{i:03}" for i in range(api.MAX_BROADCAST_ROOMS)]
    body = json.dumps({"rooms": rooms, "text": LONG_TEXT, "username": "ops"}).encode()
    assert len(api.parse_broadcast(JSON, body).rooms) == api.MAX_BROADCAST_ROOMS


# A frame or body whose top level is not an object is refused all the same, but only after its
# parse: 60 KB of 20,000 empty arrays as the top level cost ~3.2 ms, more than in a field.
TOP_LEVEL_ARRAY = json.dumps([[] for _ in range(20_000)])


def test_a_frame_that_is_an_array_of_many_values_is_refused_as_costly() -> None:
    with pytest.raises(CostlyFrame) as refused:
        parse_command(TOP_LEVEL_ARRAY)
    assert refused.value.code == ErrorCode.INVALID_FRAME


def test_an_api_body_that_is_an_array_of_many_values_is_refused_as_costly() -> None:
    with pytest.raises(api.CostlyBody):
        api.parse_posted_message(JSON, TOP_LEVEL_ARRAY.encode())


@pytest.mark.parametrize("top", ["[1, 2, 3]", '"' + "x" * COUNTED_FROM_CHARS + '"', "[]"])
def test_a_few_values_not_in_an_object_are_refused_as_before(top: str) -> None:
    with pytest.raises(api.ApiError) as refused:
        api.parse_posted_message(JSON, top.encode())
    assert not isinstance(refused.value, api.CostlyBody)
    assert refused.value.reason == "body must be a JSON object"
    with pytest.raises(ProtocolError) as frame_refused:
        parse_command(top)
    assert not isinstance(frame_refused.value, CostlyFrame)
