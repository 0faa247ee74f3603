"""docker-compose.yml as compose reads it with the .env `make compose-env` writes."""

from __future__ import annotations

import re

# What `make compose-env` writes into .env (random each time; fixed here).
DOT_ENV = {"ROOMCAST_REDIS_PASSWORD": "5f0c9e2a7b41d83e6a90c2f47b1d5e38"}
_REQUIRED = re.compile(r"\$\{([A-Z_]+):\?[^}]*\}")
_DEFAULTED = re.compile(r"\$\{[A-Z_]+:-([^}]*)\}")


def defaults(value: str) -> str:
    """What compose makes of ${NAME:-default} and ${NAME:?error} with .env holding DOT_ENV."""
    return _DEFAULTED.sub(r"\1", _REQUIRED.sub(lambda m: DOT_ENV[m[1]], value))
