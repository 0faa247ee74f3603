"""Redis errors made fit for the log: their type always, their text shortened and scrubbed."""

from __future__ import annotations

import re
from typing import Final

# redis-py names each sentinel it tried by the repr of a whole client (a kilobyte each).
_CLIENT_REPR: Final = re.compile(r"<redis\.[\w.]*Redis\((.*?)\)>\)>\)>")
_ADDRESS: Final = re.compile(r"host=([^,>]+),port=(\d+)")
_MAX_ERROR_TEXT: Final = 500
# An error reply's code as Redis sends it ("ERR", "BUSY", "NOPERM"): capitals, a few of them.
_CODE: Final = re.compile(r"[A-Z]{2,20}")


def _client_address(match: re.Match[str]) -> str:
    address = _ADDRESS.search(match[1])
    return f"{address[1]}:{address[2]}" if address else "a redis client"


def describe(exc: BaseException) -> str:
    """An exception for the log: its type always (a timeout's text is empty), then its text."""
    text = _CLIENT_REPR.sub(_client_address, str(exc))
    if len(text) > _MAX_ERROR_TEXT:
        text = text[:_MAX_ERROR_TEXT] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def refusal_kind(error: Exception) -> str:
    """A bounded name for an error reply, to count and sample its log lines by: the class
    redis-py made of it (it strips the code from the text of those it knows), else the code
    the reply starts with, else the class."""
    kind = type(error).__name__
    if kind != "ResponseError":
        return kind
    text = str(error)
    code = _CODE.match(text)
    return code[0] if code and text[code.end() : code.end() + 1] in ("", " ") else kind
