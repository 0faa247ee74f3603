"""CPU cost of verifying one connection token, per algorithm.

Run: `.venv/bin/python bench/token_cost.py` (process CPU time, 2,000 verifications each).
"""

from __future__ import annotations

import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from roomcast.core.auth import TokenVerifier

ROUNDS = 2000


def main() -> None:
    now = int(time.time())
    claims = {"sub": "u", "name": "alice", "exp": now + 600, "iat": now}
    secret = "s" * 40
    cases = [("HS256", TokenVerifier(secret=secret), jwt.encode(claims, secret, "HS256"))]
    private_keys = (
        ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ES256", ec.generate_private_key(ec.SECP256R1())),
    )
    for algorithm, key in private_keys:
        pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        signed = jwt.encode(claims, key, algorithm)
        cases.append((algorithm, TokenVerifier(public_key=pem.decode()), signed))
    for algorithm, verifier, token in cases:
        started = time.process_time()
        for _ in range(ROUNDS):
            verifier.verify(token)
        cost = (time.process_time() - started) / ROUNDS * 1e6
        print(f"{algorithm}: {cost:.1f} µs CPU per verification")


if __name__ == "__main__":
    main()
