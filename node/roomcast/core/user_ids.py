"""The ``user_id`` of events about a user: who wrote, joined or typed, beyond a name. No I/O.

With tokens on, a user's name is the token's ``name`` and applications let people pick it, so
two users could both be "Alice" and nothing in an event told them apart (red team 10: the shipped
page marked the other Alice's messages as the reader's own). Every event about a user carries an
id of the token's ``sub`` instead of the ``sub`` itself (often an e-mail address, which a room
must not learn): HMAC-SHA256 of it under a key every node shares, cut to 128 bits, URL-safe
base64 (22 characters). The same user has the same id on every node, connection and day while the
key stays; nobody without the key can tell whose it is or check a guessed ``sub`` against it.

A client without a token (open mode) has no subject: it gets a random id for its connection, so
a page can still tell its own messages from a namesake's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import os
from typing import Final

# 128 bits: no two subjects of one deployment share an id (collisions at ~2^64 subjects).
ID_BYTES: Final = 16
# What the key is derived with from the HS256 token secret when no key of its own is set: the
# secret itself is never the HMAC key of anything clients see.
_DERIVE_LABEL: Final = b"roomcast user_id key"


# Open-mode ids: random per process (a restarted node never repeats one), then a count.
_COUNT_BYTES: Final = 6
_ANONYMOUS_PREFIX: Final = os.urandom(ID_BYTES - _COUNT_BYTES)
_anonymous_count = itertools.count()


def key_from_secret(secret: bytes) -> bytes:
    """A user_id key derived from another secret all nodes share (the HS256 token secret)."""
    return hmac.new(secret, _DERIVE_LABEL, hashlib.sha256).digest()


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class UserIds:
    """Ids of token subjects under one key, and random ones for connections without a token."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = key

    def of_subject(self, subject: str) -> str:
        digest = hmac.new(self._key, subject.encode(), hashlib.sha256).digest()
        return _encode(digest[:ID_BYTES])

    @staticmethod
    def anonymous() -> str:
        """A connection's own id, never seen again (open mode): this process's random prefix
        and a count, not os.urandom per connection (a getrandom system call per handshake).
        Clients never choose their id, so nothing is gained by its being unpredictable."""
        return _encode(_ANONYMOUS_PREFIX + next(_anonymous_count).to_bytes(_COUNT_BYTES, "big"))
