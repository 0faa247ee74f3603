"""A long frame's or API body's parse is timed, and one both slower than its size allows and
written with containers its parsed value does not hold (repeated keys) is refused as costly
(wire.parse_cost). The clocks are injected: these tests do not depend on the machine's speed."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

import orjson
import pytest

from roomcast.wire import api
from roomcast.wire.codes import ErrorCode
from roomcast.wire.parse_cost import (
    PARSE_NS_FLOOR,
    PARSE_NS_PER_BYTE,
    ParseClock,
    _structure,
    _written_outside_strings,
    allowed_parse_ns,
    dropped_values,
    took_too_long,
)
from roomcast.wire.protocol import CostlyFrame, Message, parse_command

# 20 keys "a", each holding 60 empty arrays but the last: 1,200 arrays built, 3 values kept.
ARRAYS = "[" + ",".join(["[]"] * 60) + "]"
REPEATED_KEYS = '{"type":"message","text":"hi","id":4,' + ',"a":'.join([""] + [ARRAYS] * 20)[1:]
REPEATED_KEYS = REPEATED_KEYS + ',"a":0}'
# A key written 400 times with a number: no container, as costly per byte.
REPEATED_SCALARS = '{"type":"message","text":"hi"' + ',"a":0' * 400 + "}"
# As long, legitimate: brackets and braces in its text are held by the parsed string.
CODE_TEXT = json.dumps({"type": "message", "text": "[[], {}, [1, 2]], " * 200, "id": 5})


class SteppedClock:
    """A clock that advances ``step_ns`` between its two reads of one parse, of which
    ``collecting_ns`` went to a collector pass."""

    def __init__(self, step_ns: int, collecting_ns: int = 0) -> None:
        self._reads: Iterator[int] = iter(range(0, 10 * step_ns + 1, step_ns))
        self._read_count = 0
        self._pass_ns = collecting_ns
        self._collecting = 0
        self.clock = ParseClock(ns=self._read, collecting_ns=self._collected)

    def _read(self) -> int:
        self._read_count += 1
        if self._read_count == 2:
            self._collecting += self._pass_ns  # the pass ran between the clock's reads
        return next(self._reads)

    def _collected(self) -> int:
        return self._collecting


def slow(text: str | bytes) -> SteppedClock:
    """A clock that says ``text`` took 1 ns more than its size allows."""
    return SteppedClock(allowed_parse_ns(len(text.encode() if isinstance(text, str) else text)) + 1)


def test_the_bound_grows_with_the_utf8_bytes() -> None:
    assert allowed_parse_ns(0) == PARSE_NS_FLOOR
    assert allowed_parse_ns(60_000) == PARSE_NS_FLOOR + 60_000 * PARSE_NS_PER_BYTE
    ascii_text = "x" * 1000
    assert not took_too_long(ascii_text, allowed_parse_ns(1000))
    assert took_too_long(ascii_text, allowed_parse_ns(1000) + 1)
    # 1,000 characters of 3 bytes each are allowed the time of 3,000 bytes.
    cjk = "\u4e2d" * 1000
    assert not took_too_long(cjk, allowed_parse_ns(3000))
    assert took_too_long(cjk, allowed_parse_ns(3000) + 1)
    assert took_too_long(cjk.encode(), allowed_parse_ns(3000) + 1)


@pytest.mark.parametrize("text", [REPEATED_KEYS, REPEATED_SCALARS], ids=["arrays", "scalars"])
def test_a_slow_parse_of_repeated_keys_is_refused_as_costly(text: str) -> None:
    with pytest.raises(CostlyFrame) as refused:
        parse_command(text, slow(text).clock)
    assert refused.value.code == ErrorCode.INVALID_FRAME


def test_repeated_keys_parsed_within_the_bound_are_not_refused() -> None:
    within = SteppedClock(allowed_parse_ns(len(REPEATED_KEYS)))
    assert isinstance(parse_command(REPEATED_KEYS, within.clock), Message)


def test_a_collector_pass_during_the_parse_is_not_held_against_the_frame() -> None:
    allowed = allowed_parse_ns(len(REPEATED_KEYS))
    collected = SteppedClock(10 * allowed, collecting_ns=9 * allowed)
    assert isinstance(parse_command(REPEATED_KEYS, collected.clock), Message)


def test_a_parse_too_slow_besides_its_collector_pass_is_refused() -> None:
    """A frame can make a pass run (30,000 nested lists built before a repeated key drops
    them): the pass is taken off the parse, not the parse let through unjudged."""
    allowed = allowed_parse_ns(len(REPEATED_KEYS))
    collected = SteppedClock(10 * allowed, collecting_ns=9 * allowed - 1)
    with pytest.raises(CostlyFrame):
        parse_command(REPEATED_KEYS, collected.clock)


@pytest.mark.parametrize(
    "text",
    [
        CODE_TEXT,  # brackets in a string
        json.dumps({"type": "message", "text": "x" * 4000, "id": 6}),  # plain
        json.dumps({"type": "message", "text": "\u4e2d\U0001f600" * 500}, ensure_ascii=False),
        json.dumps({"type": "message", "text": "[{" * 500}),  # brackets never closed
        '{"type":"message","text":"' + "\\u005b\\u007b" * 300 + '"}',
    ],
    ids=["brackets-in-text", "plain", "other-scripts", "open-brackets", "escaped-brackets"],
)
def test_a_slow_parse_that_dropped_nothing_is_not_refused(text: str) -> None:
    """A page fault or an interrupt can make any parse read slow: time alone refuses nothing."""
    assert isinstance(parse_command(text, slow(text).clock), Message)


def test_dropped_values_counts_what_the_text_writes_against_what_the_value_holds() -> None:
    assert dropped_values(REPEATED_KEYS, json.loads(REPEATED_KEYS))
    assert dropped_values(REPEATED_KEYS.encode(), json.loads(REPEATED_KEYS))
    assert dropped_values(REPEATED_SCALARS, json.loads(REPEATED_SCALARS))
    assert not dropped_values(CODE_TEXT, json.loads(CODE_TEXT))
    nested = json.dumps({"a": [[[]] * 20, {"b": [{}] * 20, "c": "x,y"}], "d": {}, "e": [1]})
    assert not dropped_values(nested, json.loads(nested))
    # Escaped commas and brackets are held by the parsed string, not written: never dropped.
    escaped = '{"text":"' + "\\u002c\\u005b" * 100 + '"}'
    assert not dropped_values(escaped, json.loads(escaped))
    # Nor are brackets, commas and quotes in strings, however escaped.
    quoted = json.dumps({"text": 'say "[a, b]" \\ {"x": [1, 2]} \\"', 'k\\"[': "\\,{"})
    assert not dropped_values(quoted, json.loads(quoted))
    # A few repeated keys are allowed: "a" written 65 times holds 1 value and dropped 64.
    few = '{"type":"message","text":"hi"' + ',"a":0' * 65 + "}"
    assert not dropped_values(few, json.loads(few))
    assert dropped_values(few[:-1] + ',"a":0}', json.loads(few))


def test_escaped_brackets_do_not_make_up_for_dropped_values() -> None:
    """``\\u005b`` is a bracket in the parsed string, not one written: 6 bytes of it made up
    for each list a repeated key dropped (tests/adversarial/test_breakstop30_collected_parse)."""
    dropping = REPEATED_KEYS[:-1] + ',"p":"' + "\\u005b" * REPEATED_KEYS.count("[") + '"}'
    assert dropped_values(dropping, json.loads(dropping))
    with pytest.raises(CostlyFrame):
        parse_command(dropping, slow(dropping).clock)


def test_short_frames_are_not_timed() -> None:
    never = ParseClock(ns=_fail, collecting_ns=_fail)
    assert isinstance(parse_command('{"type":"message","text":"hi"}', never), Message)


def _fail() -> int:
    raise AssertionError("a short frame's parse read a clock")


def test_a_slow_api_body_of_repeated_keys_is_refused_as_costly() -> None:
    body = REPEATED_KEYS.replace('"type":"message",', '"username":"u",').encode()
    with pytest.raises(api.CostlyBody):
        api.parse_posted_message("application/json", body, slow(body).clock)
    within = SteppedClock(allowed_parse_ns(len(body)))
    assert api.parse_posted_message("application/json", body, within.clock).text == "hi"
    code = CODE_TEXT.replace('"type": "message",', '"username": "u",').encode()
    assert api.parse_posted_message("application/json", code, slow(code).clock).username == "u"


def _random_value(rng: random.Random, depth: int = 0) -> object:
    """A JSON value of containers, numbers and strings full of quotes, backslashes, commas and
    brackets, with no key written twice."""
    kind = rng.randrange(6 if depth < 4 else 3)
    if kind == 0:
        return rng.choice([0, -1, 2.5, 1e300, True, None, 10**18])
    if kind in (1, 2):
        # "\\u005b" in a string is written "\\\\u005b": an escaped backslash, no escape.
        pieces = [*'\\"\\\\,[{}]:\u4e2d\U0001f600 x\n', "\\u005b"]
        return "".join(rng.choice(pieces) for _ in range(rng.randrange(12)))
    if kind == 3:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = {str(_random_value(rng, 4)) for _ in range(rng.randrange(4))}
    return {key: _random_value(rng, depth + 1) for key in keys}


def _escaping_structure(value: object, rng: random.Random) -> str:
    """``value`` as JSON whose strings write some of their commas, brackets and braces as
    ``\\uXXXX`` escapes, as any encoder may."""
    if isinstance(value, str):
        return '"' + "".join(_char(c, rng) for c in value) + '"'
    if isinstance(value, list):
        return "[" + ",".join(_escaping_structure(item, rng) for item in value) + "]"
    if isinstance(value, dict):
        members = (
            f"{_escaping_structure(k, rng)}:{_escaping_structure(v, rng)}" for k, v in value.items()
        )
        return "{" + ",".join(members) + "}"
    return json.dumps(value)


def _char(char: str, rng: random.Random) -> str:
    if char in ",[{" and rng.random() < 0.5:
        return f"\\u{ord(char):04x}"
    return json.dumps(char)[1:-1]


@pytest.mark.parametrize("seed", range(5))
def test_what_a_value_needs_written_is_what_its_text_writes(seed: int) -> None:
    """No false refusal from the count: a value's text as any client encoder writes it (escaped
    or not, quotes and backslashes in its strings) writes exactly the commas, brackets and
    braces its containers need outside its strings, so it drops nothing."""
    rng = random.Random(seed)
    for _ in range(200):
        value = _random_value(rng)
        needed, in_strings = _structure(value)
        for text in (
            json.dumps(value),
            json.dumps(value, ensure_ascii=False),
            orjson.dumps(value).decode(),
            _escaping_structure(value, rng),
        ):
            assert _written_outside_strings(text.encode(), in_strings) == needed, text
