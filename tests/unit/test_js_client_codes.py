"""The JavaScript client's codes (clients/js/src/codes.ts) are the server's (roomcast.wire.codes).

The package cannot import Python, so its table is written out; this test reads it back and
fails on any code added, removed or changed on either side.
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path

from roomcast.client.core import FATAL_HTTP_STATUSES
from roomcast.wire.codes import (
    FATAL_CLOSE_CODES,
    CloseCode,
    ErrorCode,
    LossReason,
    RecoveryStatus,
)

CODES_TS = Path(__file__).resolve().parents[2] / "clients" / "js" / "src" / "codes.ts"


def _object(source: str, name: str) -> dict[str, str | int]:
    match = re.search(rf"export const {name} = \{{(.*?)\}} as const;", source, re.S)
    assert match is not None, f"{name} not found in {CODES_TS}"
    entries = re.findall(r"(\w+): (\"[^\"]*\"|\d+),", match.group(1))
    return {key: int(value) if value.isdigit() else value.strip('"') for key, value in entries}


def _members(enum: type[Enum]) -> dict[str, str | int]:
    return {member.name: member.value for member in enum}


def test_every_enum_is_the_same_in_the_js_client() -> None:
    source = CODES_TS.read_text(encoding="utf-8")
    for enum in (ErrorCode, CloseCode, RecoveryStatus, LossReason):
        assert _object(source, enum.__name__) == _members(enum), enum.__name__


def test_fatal_codes_and_statuses_are_the_same() -> None:
    source = CODES_TS.read_text(encoding="utf-8")
    fatal = re.search(r"FATAL_CLOSE_CODES[^=]*= new Map\(\[(.*?)\]\);", source, re.S)
    assert fatal is not None
    named = re.findall(r"\[CloseCode\.(\w+),", fatal.group(1))
    assert {CloseCode[name] for name in named} == set(FATAL_CLOSE_CODES)
    statuses = re.search(r"FATAL_HTTP_STATUSES[^=]*= new Set\(\[([\d, ]+)\]\)", source)
    assert statuses is not None
    assert {int(s) for s in statuses.group(1).split(",")} == set(FATAL_HTTP_STATUSES)
