"""Who may connect and from where: signed connection tokens, origin allow-list, proxy trust.

No I/O: the transport hands in what the handshake carried and gets an identity or a refusal.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs

import jwt

from roomcast.runtime.keys import load_public_key
from roomcast.wire.codes import ErrorCode
from roomcast.wire.usernames import UsernameError, normalize_username

if TYPE_CHECKING:
    from roomcast.runtime.config import Settings

# Browsers cannot set Authorization on a WebSocket: the token comes as ?token=… or as an
# offered subprotocol "roomcast.token.<jwt>" (next to "roomcast", which the server selects).
TOKEN_QUERY_PARAMETER: Final = "token"
TOKEN_SUBPROTOCOL_PREFIX: Final = "roomcast.token."
SUBPROTOCOL: Final = "roomcast"
CLOCK_SKEW_SECONDS: Final = 30.0


class AuthError(Exception):
    """The handshake is refused with ``status`` (401: no or bad token; 403: not allowed)."""

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Identity:
    subject: str
    name: str
    rooms: tuple[str, ...] | None  # None: any room
    expires: float | None = None  # the token's exp (Unix seconds)

    def may_join(self, room: str) -> bool:
        if self.rooms is None:
            return True
        return any(fnmatch.fnmatchcase(room, pattern) for pattern in self.rooms)


@dataclass(frozen=True, slots=True)
class RoomGrant:
    """A room token: the application lets ``subject`` into ``room`` (docs/security.md,
    "Room tokens and direct messages")."""

    subject: str
    room: str
    role: str | None
    expires: float


MAX_ROLE_LENGTH: Final = 64


class TokenVerifier:
    """Checks signature, ``exp``/``nbf``/``iat`` (with a small clock skew), audience, issuer."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        public_key: str | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = CLOCK_SKEW_SECONDS,
    ) -> None:
        if (secret is None) == (public_key is None):
            raise ValueError("give exactly one of secret (HS256) or public_key (RS256/ES256)")
        self._key: Any
        if secret is not None:
            self._key, self._algorithms = secret, ["HS256"]
        else:
            # Parsed once here, not on every handshake.
            assert public_key is not None
            self._key, algorithm = load_public_key(public_key)
            self._algorithms = [algorithm]
        self._audience = audience
        self._issuer = issuer
        self._leeway = leeway

    def verify(self, token: str) -> Identity:
        claims = self._claims(token)
        if "room" in claims:
            # A room token grants one room; taken for a connection token (no `rooms` claim)
            # it would grant every room.
            raise AuthError(401, ErrorCode.TOKEN_INVALID, "a room token is not a connection token")
        return _identity(claims)

    def verify_room(self, token: str) -> RoomGrant:
        """A join's room token: same key, audience and issuer as connection tokens, with
        ``sub``, ``exp`` and ``room`` required and ``role`` optional."""
        claims = self._claims(token)
        subject, room, role = claims.get("sub"), claims.get("room"), claims.get("role")
        if not isinstance(subject, str) or not isinstance(room, str) or not room:
            raise AuthError(401, ErrorCode.TOKEN_INVALID, "a room token needs 'sub' and 'room'")
        if role is not None and not (isinstance(role, str) and 1 <= len(role) <= MAX_ROLE_LENGTH):
            raise AuthError(401, ErrorCode.TOKEN_INVALID, "'role' must be 1-64 characters")
        return RoomGrant(subject, room, role, float(claims["exp"]))

    def _claims(self, token: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(401, ErrorCode.TOKEN_EXPIRED, "token expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError(
                401, ErrorCode.TOKEN_NOT_YET_VALID, "token not valid yet (nbf/iat)"
            ) from None
        except jwt.InvalidAudienceError:
            raise AuthError(
                401, ErrorCode.TOKEN_AUDIENCE, "token is for another audience"
            ) from None
        except jwt.InvalidIssuerError:
            raise AuthError(401, ErrorCode.TOKEN_ISSUER, "token from another issuer") from None
        except jwt.InvalidSignatureError:
            raise AuthError(401, ErrorCode.TOKEN_SIGNATURE, "token signature is invalid") from None
        except jwt.PyJWTError:
            raise AuthError(
                401, ErrorCode.TOKEN_INVALID, "token is malformed or incomplete"
            ) from None
        except (ValueError, TypeError):
            raise AuthError(401, ErrorCode.TOKEN_INVALID, "token is malformed") from None
        return claims


def _identity(claims: dict[str, Any]) -> Identity:
    subject = claims.get("sub")
    name = claims.get("name", subject)
    if not isinstance(subject, str) or not isinstance(name, str):
        raise AuthError(401, ErrorCode.TOKEN_INVALID, "'sub' and 'name' must be strings")
    try:
        name = normalize_username(name)
    except UsernameError as exc:
        reason = f"the token's name is not a valid username: {exc}"
        raise AuthError(403, ErrorCode.TOKEN_NAME, reason) from None
    rooms = claims.get("rooms")
    if rooms is not None and (
        not isinstance(rooms, list) or not all(isinstance(r, str) and r for r in rooms)
    ):
        raise AuthError(401, ErrorCode.TOKEN_INVALID, "'rooms' must be a list of room patterns")
    expires = claims.get("exp")
    return Identity(
        subject,
        name,
        tuple(rooms) if rooms is not None else None,
        float(expires) if isinstance(expires, int | float) else None,
    )


def token_from_request(path: str, subprotocols: Sequence[str]) -> str | None:
    _, _, query = path.partition("?")
    values = None
    if query:  # most handshakes have none (a browser sends its token as a subprotocol)
        try:
            values = parse_qs(query, max_num_fields=16).get(TOKEN_QUERY_PARAMETER)
        except ValueError:  # more fields than any real client sends: no token taken from it
            values = None
    if values:
        return values[0]
    for offered in subprotocols:
        if offered.startswith(TOKEN_SUBPROTOCOL_PREFIX):
            return offered[len(TOKEN_SUBPROTOCOL_PREFIX) :]
    return None


def issue_token(
    secret: str,
    subject: str,
    *,
    name: str | None = None,
    rooms: Iterable[str] | None = None,
    ttl: float = 3600.0,
    audience: str | None = None,
    issuer: str | None = None,
    room: str | None = None,
    role: str | None = None,
) -> str:
    """An HS256 development token (the ``roomcast token`` command); with ``room``, a room
    token granting that one room (and ``role`` in it)."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": subject, "iat": now, "nbf": now, "exp": now + int(ttl)}
    if name is not None:
        claims["name"] = name
    if rooms is not None:
        claims["rooms"] = list(rooms)
    if audience is not None:
        claims["aud"] = audience
    if issuer is not None:
        claims["iss"] = issuer
    if room is not None:
        claims["room"] = room
    if role is not None:
        claims["role"] = role
    return jwt.encode(claims, secret, algorithm="HS256")


class OriginPolicy:
    """Exact origins and ``https://*.example.com`` patterns; empty: every origin (development)."""

    def __init__(self, allowed: Iterable[str]) -> None:
        self._exact: set[str] = set()
        self._suffixes: list[tuple[str, str]] = []  # (scheme://, .domain)
        for raw in allowed:
            entry = raw.strip().rstrip("/").lower()
            if not entry:
                continue
            scheme, sep, host = entry.partition("://")
            if sep and host.startswith("*."):
                self._suffixes.append((scheme + "://", host[1:]))
            else:
                self._exact.add(entry)

    @property
    def open(self) -> bool:
        return not self._exact and not self._suffixes

    def allows(self, origin: str | None) -> bool:
        if self.open or origin is None:
            # No Origin header: not a browser, so not cross-site WebSocket hijacking.
            return True
        origin = origin.strip().lower()
        if origin in self._exact:
            return True
        for scheme, suffix in self._suffixes:
            if origin.startswith(scheme):
                host = origin[len(scheme) :].split(":", 1)[0]
                if host.endswith(suffix) and len(host) > len(suffix):
                    return True
        return False


class ProxyTrust:
    """Whose ``X-Forwarded-For`` to believe, and which part of it: the load balancer's own hop.

    Only the right-most address is believed, the one the trusted proxy itself wrote (nginx
    sets the header to ``$remote_addr``). Walking further left through "trusted" ranges would
    believe whatever a client in such a range (every private network, in compose and k8s)
    wrote there itself.
    """

    def __init__(self, trusted: Iterable[str]) -> None:
        self._networks = [
            ipaddress.ip_network(t.strip(), strict=False) for t in trusted if t.strip()
        ]
        # Answers for recent addresses: every handshake asks about its peer (nginx, mostly), and
        # parsing an address costs more than the rest of the check.
        self._verdicts: dict[str, bool] = {}

    def client_address(self, peer: str, forwarded_for: str | None) -> str:
        """The client's address (the peer's, when the forwarded one is malformed)."""
        address = self.forwarded_client(peer, forwarded_for)
        return peer if address is None else address

    def forwarded_client(self, peer: str, forwarded_for: str | None) -> str | None:
        """Like client_address, but None when a trusted proxy sent a malformed header."""
        if forwarded_for is None or not self._trusted(peer):
            return peer
        hop = forwarded_for.rpartition(",")[2].strip()
        try:
            # Normalized: nothing but an address reaches logs and rate-limit keys.
            return str(ipaddress.ip_address(hop))
        except ValueError:
            return None

    def _trusted(self, address: str) -> bool:
        verdict = self._verdicts.get(address)
        if verdict is None:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                verdict = False
            else:
                verdict = any(ip in network for network in self._networks)
            if len(self._verdicts) >= 4096:
                self._verdicts.clear()  # bounded: forged X-Forwarded-For hops cannot grow it
            self._verdicts[address] = verdict
        return verdict


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """Who may connect, built once by the composition root for the WebSocket and the HTTP side."""

    verifier: TokenVerifier | None  # None in open mode (no secret, no key)
    origins: OriginPolicy
    proxies: ProxyTrust

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessPolicy:
        verifier = (
            TokenVerifier(
                secret=settings.auth_secret,
                public_key=settings.auth_public_key,
                audience=settings.auth_audience,
                issuer=settings.auth_issuer,
                leeway=settings.auth_leeway,
            )
            if settings.auth_enabled
            else None
        )
        return cls(
            verifier, OriginPolicy(settings.allowed_origins), ProxyTrust(settings.trusted_proxies)
        )
