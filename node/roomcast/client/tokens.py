"""Where a client gets a fresh connection token: the application's token URL.

``RoomcastClient(token=token_from_url("https://app.example/roomcast/token", headers=...))``
asks the URL before every connection and whenever the server says the token is expiring
(``token_expiring``); the client then sends it as a ``refresh`` on the open connection. The URL
answers the token as ``text/plain``, or as JSON ``{"token": "<jwt>"}``.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import orjson

MAX_TOKEN_BYTES: Final = 16 * 1024


class TokenUrlError(Exception):
    """The token URL did not answer with a token."""


def token_from_url(
    url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 10.0
) -> Callable[[], Awaitable[str]]:
    """A token source (for ``RoomcastClient(token=...)``) that GETs ``url`` for each token;
    ``headers`` carry the application's own credentials (a session cookie, an API key)."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"the token URL must be http(s)://…, not {url!r}")
    sent = {"Accept": "application/json, text/plain", **(headers or {})}

    def fetch() -> str:
        request = urllib.request.Request(url, headers=sent, method="GET")
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            body = answer.read(MAX_TOKEN_BYTES + 1)
            content_type = answer.headers.get_content_type()
        return parse_token_answer(body, content_type)

    async def source() -> str:
        return await asyncio.to_thread(fetch)

    return source


def parse_token_answer(body: bytes, content_type: str) -> str:
    """The token in a token URL's answer (JSON ``{"token": T}`` or the bare token)."""
    if len(body) > MAX_TOKEN_BYTES:
        raise TokenUrlError("the token URL answered more than a token")
    if content_type == "application/json":
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise TokenUrlError("the token URL answered invalid JSON") from None
        token = data.get("token") if isinstance(data, dict) else None
    else:
        token = body.decode("ascii", errors="replace").strip()
    if not isinstance(token, str) or not token or any(c.isspace() for c in token):
        raise TokenUrlError("the token URL answered no token")
    return token
