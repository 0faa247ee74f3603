"""Names people can tell apart: NFKC, nothing invisible, one script (issue 15)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomcast.core.auth import AuthError, _identity
from roomcast.wire.codes import ErrorCode
from roomcast.wire.protocol import ProtocolError, validate_username
from roomcast.wire.usernames import (
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
