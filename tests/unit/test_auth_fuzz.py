"""Fuzzing the token path: whatever a client puts in the URL or subprotocol header, verification
answers with an identity or an AuthError, never another exception."""

from __future__ import annotations

import time

import jwt
from hypothesis import given, settings
from hypothesis import strategies as st

from roomcast.core.auth import (
    AuthError,
    OriginPolicy,
    ProxyTrust,
    TokenVerifier,
    token_from_request,
)

SECRET = "fuzz-" + "s" * 40
VERIFIER = TokenVerifier(secret=SECRET)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _verify(token: str) -> None:
    try:
        VERIFIER.verify(token)
    except AuthError as exc:
        assert exc.status in (401, 403)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_as_a_token(token: str) -> None:
    _verify(token)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["sub", "name", "exp", "nbf", "iat", "rooms", "aud", "x"]), json_values
    )
)
def test_signed_tokens_with_arbitrary_claims(claims: dict[str, object]) -> None:
    # Correctly signed, so everything past the signature check is exercised.
    try:
        token = jwt.encode(claims, SECRET, "HS256")
    except (TypeError, ValueError):
        return  # not encodable as JSON: no client can send it either
    _verify(token)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.lists(st.text(max_size=60), max_size=4))
def test_token_extraction_from_any_path_and_subprotocols(path: str, offered: list[str]) -> None:
    token = token_from_request("/chat?" + path, offered)
    assert token is None or isinstance(token, str)


def test_a_query_with_too_many_fields_yields_no_token_instead_of_an_error() -> None:
    # Found by schemathesis: parse_qs raised ValueError past 16 fields, which hung handshakes.
    assert token_from_request("/chat?" + "&".join(["a=1"] * 40) + "&token=t", []) is None


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.text(max_size=80)), st.text(max_size=80))
def test_origin_and_forwarded_for_parsing(origin: str | None, forwarded: str) -> None:
    assert isinstance(OriginPolicy(["https://*.example.com"]).allows(origin), bool)
    assert isinstance(ProxyTrust(["127.0.0.1"]).client_address("127.0.0.1", forwarded), str)


def test_valid_token_round_trip() -> None:
    now = int(time.time())
    identity = VERIFIER.verify(jwt.encode({"sub": "a", "exp": now + 60}, SECRET, "HS256"))
    assert identity.name == "a" and identity.may_join("anything")
