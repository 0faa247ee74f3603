"""JWTs this suite signs itself, and the token-mode cluster they are for."""

from __future__ import annotations

import time
from typing import Any

import jwt

SECRET = "adversarial-secret-" + "s" * 40
LEEWAY_S = 30.0  # the README's documented clock skew for exp/nbf/iat


def sign(secret: str = SECRET, **claims: Any) -> str:
    now = int(time.time())
    body: dict[str, Any] = {"sub": "mallory", "name": "mallory", "iat": now, "exp": now + 600}
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, secret, "HS256")


def es256(private: Any, **claims: Any) -> str:
    """An ES256 token signed with ``private`` (the `keyed` fixture's key), valid for 10 min."""
    return jwt.encode({"exp": int(time.time()) + 600, **claims}, private, "ES256")
