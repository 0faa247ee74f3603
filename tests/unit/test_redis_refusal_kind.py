"""Error replies are counted and their log lines sampled by kind: a few kinds, whatever the text."""

from __future__ import annotations

from redis.exceptions import NoPermissionError, OutOfMemoryError, ResponseError

from roomcast.broker.errors import refusal_kind


def test_a_reply_is_named_by_its_code_or_by_the_class_redis_py_made_of_it() -> None:
    assert refusal_kind(ResponseError("BUSY Redis is busy running a script.")) == "BUSY"
    assert refusal_kind(ResponseError("ERR The user executing the script can't run")) == "ERR"
    assert refusal_kind(NoPermissionError("this user may not publish")) == "NoPermissionError"
    assert refusal_kind(OutOfMemoryError("command not allowed")) == "OutOfMemoryError"


def test_text_that_starts_with_no_code_is_named_by_its_class() -> None:
    for text in ("", "busy", "Error running script", "ERRORS_OF_ALL_KINDS_AND_MORE x", "ERR:"):
        assert refusal_kind(ResponseError(text)) == "ResponseError", text
