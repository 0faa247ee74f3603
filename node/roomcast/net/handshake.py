"""What a WebSocket handshake must look like before anything else reads it. No I/O.

Headers that decide who a client is or where it comes from must be unambiguous: a request with
two ``Origin`` (or ``Host``, ``Authorization``, ``X-Forwarded-For``…) headers, or two tokens, is
refused with a clean 400 instead of letting one reader pick the first and another the last.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import parse_qsl

from websockets.datastructures import Headers

from roomcast.core.auth import TOKEN_QUERY_PARAMETER, TOKEN_SUBPROTOCOL_PREFIX, AuthError
from roomcast.wire.codes import ErrorCode

# Each may appear at most once (RFC 9110 §5.3: only list-valued fields may repeat).
SINGLE_HEADERS: Final = (
    "Host",
    "Origin",
    "Authorization",
    "X-Forwarded-For",
    "X-API-Key",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Upgrade",
)
# More subprotocols than any real client offers (a browser offers two: roomcast + its token).
MAX_SUBPROTOCOLS: Final = 8
MAX_ORIGIN_LENGTH: Final = 256
# "null" (sandboxed documents, file: pages) or scheme://host[:port], as browsers send it.
_ORIGIN: Final = re.compile(r"null|[A-Za-z][A-Za-z0-9+.\-]*://[A-Za-z0-9.\-\[\]:_]+")


def malformed(code: ErrorCode, reason: str) -> AuthError:
    return AuthError(400, code, reason)


def check_request(path: str, headers: Headers) -> list[str]:
    """Refuse ambiguous or malformed security headers; return the offered subprotocols."""
    for name in SINGLE_HEADERS:
        if len(headers.get_all(name)) > 1:
            raise malformed(ErrorCode.DUPLICATE_HEADER, f"more than one {name} header")
    origin = headers.get("Origin")
    if origin is not None and (
        len(origin) > MAX_ORIGIN_LENGTH or _ORIGIN.fullmatch(origin.strip()) is None
    ):
        raise malformed(ErrorCode.MALFORMED_HEADER, "Origin is not scheme://host[:port] or null")
    offered = [
        entry.strip()
        for value in headers.get_all("Sec-WebSocket-Protocol")
        for entry in value.split(",")
        if entry.strip()
    ]
    if len(offered) > MAX_SUBPROTOCOLS:
        raise malformed(
            ErrorCode.MALFORMED_HEADER, f"more than {MAX_SUBPROTOCOLS} subprotocols offered"
        )
    tokens = sum(1 for entry in offered if entry.startswith(TOKEN_SUBPROTOCOL_PREFIX))
    _, _, query = path.partition("?")
    try:
        fields = parse_qsl(query, keep_blank_values=True, max_num_fields=16)
    except ValueError:
        raise malformed(ErrorCode.MALFORMED_QUERY, "too many query parameters") from None
    tokens += sum(1 for key, _ in fields if key == TOKEN_QUERY_PARAMETER)
    if tokens > 1:
        raise malformed(
            ErrorCode.DUPLICATE_TOKEN, "more than one token (query and/or subprotocols)"
        )
    return offered
