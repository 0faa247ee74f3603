"""The public key that verifies connection tokens: settings check it at start, auth uses it."""

from __future__ import annotations

from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def load_public_key(pem: str) -> tuple[PublicKey, Literal["RS256", "ES256"]]:
    """The key and the one algorithm it may verify: the key type fixes the algorithm, so a token
    cannot pick a weaker one. Raises ``ValueError`` (or ``TypeError``) for anything else."""
    key = serialization.load_pem_public_key(pem.encode())
    if isinstance(key, rsa.RSAPublicKey):
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key, "ES256"
    raise ValueError("the public key must be RSA (RS256) or EC P-256 (ES256)")
