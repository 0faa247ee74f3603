"""Refuse secrets anyone could know: shipped placeholders, documentation examples, guessable text.

A deployment that forgot to replace ``k8s/15-secrets.yaml``'s placeholders, or kept a
compose default, must not start: a token signed with a published placeholder would admit anyone
as anyone. The check is deliberately conservative: random secrets (``openssl rand -hex 32``)
never trip it.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

# Text that marks a value as an example rather than a secret (compared case-insensitively,
# with "_" read as "-").
_PLACEHOLDER_MARKERS: Final = (
    "replace-me",
    "replaceme",
    "change-me",
    "changeme",
    "placeholder",
    "example",
    "roomcast-dev-password",
)
# Fewer distinct characters than this cannot be a random secret of the required length.
_MIN_DISTINCT: Final = 6

GENERATE_HINT: Final = "generate one with `openssl rand -hex 32`"


def why_weak(value: str, *, random_expected: bool = True) -> str | None:
    """Why ``value`` is no secret, or None: a placeholder, or (``random_expected``: a signing
    secret or API key, which only a generator should make) too few distinct characters."""
    lowered = value.lower().replace("_", "-")
    for marker in _PLACEHOLDER_MARKERS:
        if marker in lowered:
            return f"it contains {marker!r}, a placeholder, not a secret"
    if random_expected and len(set(value)) < _MIN_DISTINCT:
        return f"it has fewer than {_MIN_DISTINCT} distinct characters"
    return None


def redis_password_in(url: str) -> str | None:
    """The password of the first ``redis://`` URL of ``url`` (seed lists allowed), if any."""
    first = url.split(",", 1)[0].strip()
    try:
        return urlsplit(first).password
    except ValueError:
        return None
