"""Usernames people can tell apart: NFKC-normalized, nothing invisible, one script. No I/O.

A name is what members see beside a message, so two names that render alike are an
impersonation: "admin" spelled with a Cyrillic "a" (U+0430), "ad\u200bmin", a name of Hangul
fillers that renders blank. This is the "highly restrictive" profile of Unicode TS #39 (§5.2),
approximated from character names (the standard library has no Script property): letters of
one script, or of the CJK combinations used in Japanese and Korean; digits, space and
``. @ - _ '`` with any. Not covered: whole-script confusables (an all-Cyrillic "ape" against
the Latin one).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

MAX_LENGTH: Final = 32
# Letters and digits of any script (\w), space and a few separators; no control or markup.
USERNAME_PATTERN: Final = re.compile(r"[\w .@\-']{1,32}")
# Letters (category Lo) that render as nothing.
_INVISIBLE_WORDS: Final = ("FILLER",)
# Scripts that mix in everyday writing (Japanese: Han + kana; Korean: Han + Hangul; Chinese
# with Bopomofo); any other pair of scripts in one name is refused.
_MIXES: Final = (
    frozenset({"CJK", "HIRAGANA", "KATAKANA"}),
    frozenset({"CJK", "HANGUL"}),
    frozenset({"CJK", "BOPOMOFO"}),
)


class UsernameError(ValueError):
    """Why a name is refused, said so that its owner can fix it."""


def normalize_username(raw: str) -> str:
    """The name as it will be shown, or UsernameError."""
    name = unicodedata.normalize("NFKC", raw)
    if USERNAME_PATTERN.fullmatch(name) is None:
        raise UsernameError(f"must be 1-{MAX_LENGTH} letters, digits, spaces or . @ - _ '")
    if not name.strip():
        raise UsernameError("must not be blank")
    if name != name.strip() or "  " in name:
        raise UsernameError("must not start or end with a space, or hold two in a row")
    if name.isascii():
        # What the pattern lets through in ASCII (letters, digits, _ . @ - ' and single spaces)
        # holds nothing invisible and one script at most (Latin): the checks below would pass
        # it, one Python call per character later (most names, on every join).
        return name
    for char in name:
        if _invisible(char):
            raise UsernameError(f"holds an invisible character (U+{ord(char):04X})")
    scripts = {_script(char) for char in name if char.isalnum() and not char.isascii()}
    if any(char.isascii() and char.isalpha() for char in name):
        scripts.add("LATIN")
    if len(scripts) > 1 and not any(scripts <= mix for mix in _MIXES):
        shown = " and ".join(sorted(s.title() for s in scripts))
        raise UsernameError(f"mixes scripts ({shown}), so it could imitate another name")
    return name


def _invisible(char: str) -> bool:
    category = unicodedata.category(char)
    if category[0] in "CZ" and char != " ":  # controls, formats, other spaces, separators
        return True
    return category == "Lo" and any(w in unicodedata.name(char, "") for w in _INVISIBLE_WORDS)


def _script(char: str) -> str:
    # "CYRILLIC SMALL LETTER A" -> CYRILLIC; "CJK UNIFIED IDEOGRAPH-4E00" -> CJK.
    name = unicodedata.name(char, "UNKNOWN")
    word = name.split(" ", 1)[0]
    return "CJK" if word.startswith("CJK") else word
