"""Names people can tell apart: NFKC, nothing invisible, one script (issue 15)."""

from __future__ import annotations

import re
import sys
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomcast.core.auth import AuthError, _identity
from roomcast.wire.codes import ErrorCode
from roomcast.wire.protocol import ProtocolError, validate_username
from roomcast.wire.usernames import (
    MAX_LENGTH,
    MAX_RAW_LENGTH,
    USERNAME_PATTERN,
    UsernameError,
    _invisible,
    _script,
    normalize_username,
)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("\u3164", "invisible"),  # Hangul filler: renders blank
        ("\u3164\u3164admin", "invisible"),
        ("\uffa0", "invisible"),  # halfwidth Hangul filler
        ("ad\u200bmin", "letters"),  # zero-width space (not \w)
        ("\u0430dmin", "mixes scripts (Cyrillic and Latin)"),  # Cyrillic a
        ("p\u0430ypal", "mixes scripts"),
        ("admin\u0399", "mixes scripts (Greek and Latin)"),
        (" admin", "space"),
        ("admin ", "space"),
        ("ad  min", "space"),
        ("\u2003admin", "space"),  # em space: NFKC makes it a leading space
    ],
)
def test_look_alike_and_invisible_names_are_refused(name: str, why: str) -> None:
    with pytest.raises(UsernameError, match=re.escape(why)):
        normalize_username(name)
    with pytest.raises(ProtocolError) as info:
        validate_username(name)
    assert info.value.code == ErrorCode.INVALID_USERNAME


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("ann", "ann"),
        ("Ann O'Neil", "Ann O'Neil"),
        ("Анна", "Анна"),  # all Cyrillic is one script
        ("山田太郎", "山田太郎"),
        ("やまだ タロウ", "やまだ タロウ"),  # Japanese: Han, Hiragana, Katakana together
        ("김민준", "김민준"),
        ("\uff46\uff55\uff4c\uff4c", "full"),  # fullwidth letters: NFKC
        ("ﬁsh", "fish"),  # ligature
        ("\U0001d41b\U0001d428\U0001d425\U0001d41d", "bold"),  # mathematical bold
        ("Zoë", "Zoë"),
        ("Zoe\u0308", "Zoë"),  # combining diaeresis composed
        ("agent 007", "agent 007"),
    ],
)
def test_real_names_pass_normalized(name: str, shown: str) -> None:
    assert normalize_username(name) == shown


def test_a_tokens_name_is_checked_the_same_way() -> None:
    with pytest.raises(AuthError) as info:
        _identity({"sub": "u", "name": "\u0430dmin"})
    assert (info.value.status, info.value.code) == (403, "token_name")
    assert _identity({"sub": "u", "name": "ﬁona"}).name == "fiona"


@given(st.text(max_size=40))
def test_any_text_is_a_normalized_name_or_a_clear_refusal(raw: str) -> None:
    try:
        name = normalize_username(raw)
    except UsernameError as exc:
        assert str(exc)
    else:
        assert normalize_username(name) == name  # idempotent: what is shown is what is kept
        assert name == name.strip() and 1 <= len(name) <= 32


@given(st.text(alphabet=st.characters(max_codepoint=0x7F), min_size=1, max_size=40))
def test_ascii_names_are_judged_as_the_full_checks_judge_them(raw: str) -> None:
    # ASCII names skip the per-character checks: whatever the pattern and the space rules let
    # through must be what those checks would let through, unchanged.
    passes_full_checks = (
        USERNAME_PATTERN.fullmatch(raw) is not None
        and raw.strip() == raw
        and "  " not in raw
        and not any(_invisible(char) for char in raw)
        and not {_script(char) for char in raw if char.isalnum() and not char.isascii()}
    )
    try:
        shown = normalize_username(raw)
    except UsernameError:
        assert not passes_full_checks
    else:
        assert passes_full_checks
        assert shown == raw


def test_a_name_of_many_marks_is_refused_unnormalized() -> None:
    """64 KB of marks of two combining classes in turn: NFKC's canonical ordering is quadratic
    in them (CPython before gh-149079), about a second of the node's thread."""
    with pytest.raises(ProtocolError) as info:
        validate_username("a" + "\u0301\u0316" * 15_000)
    assert info.value.code == ErrorCode.INVALID_USERNAME


def test_the_longest_raw_name_that_can_normalize_to_a_name_still_passes() -> None:
    # Alpha with three marks composes to one character (U+1F82): four code points each.
    raw = "\u03b1\u0313\u0300\u0345" * MAX_LENGTH
    assert len(raw) == MAX_RAW_LENGTH
    assert normalize_username(raw) == "\u1f82" * MAX_LENGTH


def test_no_character_composes_from_more_than_four_code_points() -> None:
    """Why MAX_RAW_LENGTH is 4 x MAX_LENGTH: NFKC's output is at least a quarter of its
    input's length, as no composed character stands for more than four code points."""
    longest = max(
        len(unicodedata.normalize("NFD", chr(code)))
        for code in range(sys.maxunicode + 1)
        if not 0xD800 <= code <= 0xDFFF
    )
    assert longest * MAX_LENGTH <= MAX_RAW_LENGTH
