"""Usernames people can tell apart: NFKC-normalized, nothing invisible, one script. No I/O.

A name is what members see beside a message, so two names that render alike are an
impersonation: "admin" spelled with a Cyrillic "a" (U+0430), "ad\u200bmin", a name of Hangul
fillers that renders blank. This is the "highly restrictive" profile of Unicode TS #39 (§5.2),
approximated from character names (the standard library has no Script property): letters of
one script, or of the CJK combinations used in Japanese and Korean; digits, space and
``. @ - _ '`` with any. Not covered: whole-script confusables (an all-Cyrillic "ape" against
the Latin one).

Scripts written with combining marks (Devanagari, Tamil, Bengali, Thai, Arabic vowel signs…) need
them: "प्रिया" is four letters and three marks. A mark is taken after a letter of its own script
(named after it: "DEVANAGARI VOWEL SIGN I" after "DEVANAGARI LETTER PA"), at most
``MAX_MARKS_IN_A_ROW`` of them; the generic "COMBINING …" marks (an overlay, a stroke, a stack of
accents on Latin letters) belong to no script and stay refused, and so do marks that render as
nothing (variation selectors, the grapheme joiner, Khmer inherent vowels).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

MAX_LENGTH: Final = 32
# The longest raw name worth normalizing. NFKC never shortens a text by more than its canonical
# compositions do, and none joins more than four code points into one (the longest canonical
# decomposition: U+1F82, alpha with three marks), so a longer one cannot become MAX_LENGTH
# characters. Checked first: CPython's NFKC orders a run of combining marks with an insertion
# sort (quadratic until CPython gh-149079; measured on Python 3.11.7), and a 64 KB join
# frame of marks of two classes in turn held the node's thread for about a second.
MAX_RAW_LENGTH: Final = 4 * MAX_LENGTH
# Letters and digits of any script (\w), space and a few separators; no control or markup.
USERNAME_PATTERN: Final = re.compile(r"[\w .@\-']{1,32}")
# Letters (category Lo) and marks that render as nothing.
_INVISIBLE_WORDS: Final = ("FILLER", "INHERENT", "VARIATION", "GRAPHEME JOINER")
# Marks on one letter: Indic clusters take up to three (virama, consonant sign, vowel sign),
# Arabic and Hebrew vowel points two or three; more is a stack drawn over the neighbours.
MAX_MARKS_IN_A_ROW: Final = 4
# The characters of a name once its script's marks are set aside.
_BASE_PATTERN: Final = re.compile(r"[\w .@\-']+")
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
    if len(raw) > MAX_RAW_LENGTH:
        raise UsernameError(f"must be 1-{MAX_LENGTH} letters, digits, spaces or . @ - _ '")
    name = unicodedata.normalize("NFKC", raw)
    if USERNAME_PATTERN.fullmatch(name) is None and not _with_own_marks(name):
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
    scripts = {
        _script(char)
        for char in name
        if (char.isalnum() or unicodedata.category(char) in _MARKS) and not char.isascii()
    }
    if any(char.isascii() and char.isalpha() for char in name):
        scripts.add("LATIN")
    if len(scripts) > 1 and not any(scripts <= mix for mix in _MIXES):
        shown = " and ".join(sorted(s.title() for s in scripts))
        raise UsernameError(f"mixes scripts ({shown}), so it could imitate another name")
    return name


_MARKS: Final = ("Mn", "Mc")


def _with_own_marks(name: str) -> bool:
    """Whether ``name`` is letters etc. (the pattern) with marks each after a letter of its
    script: only names the pattern refused are looked at, so the usual ones cost nothing."""
    if not 1 <= len(name) <= MAX_LENGTH:
        return False
    base: str | None = None  # the script of the letter the marks in a row are on
    in_a_row = vowels = 0
    previous = ""
    bare = []
    for char in name:
        if unicodedata.category(char) not in _MARKS:
            base = _script(char) if char.isalpha() and not char.isascii() else None
            in_a_row = vowels = 0
            previous = char
            bare.append(char)
            continue
        in_a_row += 1
        if base is None or _script(char) != base or in_a_row > MAX_MARKS_IN_A_ROW:
            return False
        if char == previous:  # a second virama or vowel sign drawn over the first
            return False
        if "VOWEL SIGN" in unicodedata.name(char, ""):
            vowels += 1
            if vowels > 1:  # a letter takes one vowel: a second is drawn on a dotted circle
                return False
        previous = char
    return bool(bare) and _BASE_PATTERN.fullmatch("".join(bare)) is not None


def _invisible(char: str) -> bool:
    category = unicodedata.category(char)
    if category[0] in "CZ" and char != " ":  # controls, formats, other spaces, separators
        return True
    if category not in ("Lo", *_MARKS):
        return False
    return any(w in unicodedata.name(char, "") for w in _INVISIBLE_WORDS)


def _script(char: str) -> str:
    # "CYRILLIC SMALL LETTER A" -> CYRILLIC; "CJK UNIFIED IDEOGRAPH-4E00" -> CJK.
    name = unicodedata.name(char, "UNKNOWN")
    word = name.split(" ", 1)[0]
    return "CJK" if word.startswith("CJK") else word
