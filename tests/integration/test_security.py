"""Who may connect and what they may do: every refusal at the handshake, no spoofing, limits,
and secrets that never reach the logs. REAL redis-server (with a password) and node processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from roomcast_dev.devcluster import LocalCluster
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from roomcast.core.auth import issue_token
from tests.support.cluster import FAST_ENV, http_get, metric_value
from tests.support.wsclient import Client, scaled

pytestmark = pytest.mark.integration

SECRET = "test-secret-" + "k" * 40
REDIS_PASSWORD = "redis-pass-" + "p" * 20
ORIGIN = "https://chat.example.com"


def token(**claims: Any) -> str:
    now = int(time.time())
    body = {"sub": "u-1", "name": "alice", "iat": now, "nbf": now, "exp": now + 600}
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, SECRET, "HS256")


@pytest.fixture(scope="module")
def secure() -> Iterator[LocalCluster]:
    env = dict(
        FAST_ENV,
        ROOMCAST_AUTH_SECRET=SECRET,
        ROOMCAST_AUTH_AUDIENCE="roomcast",
        ROOMCAST_ALLOWED_ORIGINS=f"{ORIGIN},https://*.example.org",
        ROOMCAST_MESSAGE_RATE_PER_SECOND="5",
        ROOMCAST_MESSAGE_RATE_BURST="10",
        ROOMCAST_LOG_LEVEL="DEBUG",
    )
    with LocalCluster(2, nginx=False, node_env=env, redis_password=REDIS_PASSWORD) as cluster:
        yield cluster


# PyJWT's annotations leave out None, the only key its "none" algorithm accepts.
UNSIGNED = jwt.encode({"sub": "x", "exp": 2**31, "aud": "roomcast"}, None, "none")  # type: ignore[arg-type]


def url(cluster: LocalCluster, query: str = "") -> str:
    return cluster.nodes[0].url + query


async def refused(address: str, **kwargs: Any) -> int:
    with pytest.raises(InvalidStatus) as info:
        await connect(address, open_timeout=scaled(5), **kwargs)
    return info.value.response.status_code


# Each query is minted when its case runs, never at collection: a full run reaches this module
# more than ten minutes after collecting it, and a token minted then has expired by the time
# it is sent (a "bad name claim" answered 401 TOKEN_EXPIRED, not 403), or its nbf has come
# ("not yet valid" accepted). tests/unit/test_tests_read_the_clock_late.py keeps it so.
@pytest.mark.parametrize(
    ("case", "query", "status"),
    [
        ("missing token", lambda: "", 401),
        (
            "bad signature",
            lambda: "?token=" + jwt.encode({"sub": "x", "exp": 2**31}, "other" * 10, "HS256"),
            401,
        ),
        ("expired", lambda: "?token=" + token(aud="roomcast", exp=int(time.time()) - 120), 401),
        (
            "not yet valid",
            lambda: "?token=" + token(aud="roomcast", nbf=int(time.time()) + 600, exp=2**31),
            401,
        ),
        ("wrong audience", lambda: "?token=" + token(aud="another-service"), 401),
        ("no audience", lambda: "?token=" + token(), 401),
        ("garbage", lambda: "?token=not.a.jwt", 401),
        ("alg none", lambda: "?token=" + UNSIGNED, 401),
        ("bad name claim", lambda: "?token=" + token(aud="roomcast", name="<b>x</b>"), 403),
    ],
)
async def test_refused_at_the_handshake(
    secure: LocalCluster, case: str, query: Callable[[], str], status: int
) -> None:
    node = secure.nodes[0]
    before = http_get(f"{node.metrics_url}/metrics")[1]
    assert await refused(url(secure, query())) == status, case
    after = http_get(f"{node.metrics_url}/metrics")[1]
    assert metric_value(after, "roomcast_connections_accepted_total") == metric_value(
        before, "roomcast_connections_accepted_total"
    )  # nothing was opened
    rejected = "roomcast_handshakes_rejected_total"
    assert metric_value(after, rejected, {"status": str(status)}) == (
        metric_value(before, rejected, {"status": str(status)}) + 1
    )


async def test_bad_origin_is_refused_403_and_good_ones_pass(secure: LocalCluster) -> None:
    good = "?token=" + token(aud="roomcast")
    assert await refused(url(secure, good), origin="https://evil.example.net") == 403
    assert await refused(url(secure, good), origin="https://example.org") == 403  # not a subdomain
    for origin in (ORIGIN, "https://eu.example.org"):
        client = await Client.connect(url(secure, good), origin=origin)
        await client.close()


async def test_username_comes_from_the_token_never_from_join(secure: LocalCluster) -> None:
    alice = await Client.connect(url(secure, "?token=" + token(aud="roomcast", name="alice")))
    bob = await Client.connect(
        secure.nodes[1].url + "?token=" + token(aud="roomcast", sub="u-2", name="bob")
    )
    try:
        joined = await alice.join("spoof", "admin")  # asks to be "admin"
        assert joined["username"] == "alice"
        await bob.join("spoof", "alice")
        seen = await alice.recv_type("user_joined")
        assert seen["username"] == "bob"
        await bob.send(type="message", text="hello")
        assert (await alice.recv_type("message"))["username"] == "bob"
    finally:
        await alice.close()
        await bob.close()


async def test_token_in_the_subprotocol_header(secure: LocalCluster) -> None:
    """What a browser can do: offer ["roomcast", "roomcast.token.<jwt>"]."""
    offered = ["roomcast", "roomcast.token." + token(aud="roomcast")]
    client = await Client.connect(url(secure), subprotocols=offered)
    try:
        assert client.ws.subprotocol == "roomcast"  # the token is not echoed back
        assert (await client.join("sub", "x"))["username"] == "alice"
    finally:
        await client.close()


async def test_rooms_claim_limits_what_may_be_joined(secure: LocalCluster) -> None:
    client = await Client.connect(url(secure, "?token=" + token(aud="roomcast", rooms=["team-*"])))
    bystander = await Client.connect(url(secure, "?token=" + token(aud="roomcast", name="carol")))
    try:
        await bystander.join("secret", "carol")
        await client.send(type="join", room="secret", username="x")
        error = await client.recv_type("error")
        assert error["code"] == "forbidden" and error["room"] == "secret"
        await client.send(type="message", text="sneak", room="secret")
        assert (await client.recv_type("error"))["code"] == "not_joined"
        assert (await client.join("team-blue", "x"))["room"] == "team-blue"
        await bystander.send(type="presence", room="secret")
        presence = await bystander.recv_type("presence")
        assert [m["username"] for m in presence["members"]] == ["carol"]  # nothing delivered
    finally:
        await client.close()
        await bystander.close()


async def test_message_rate_limit_spares_well_behaved_clients(secure: LocalCluster) -> None:
    spammer = await Client.connect(url(secure, "?token=" + token(aud="roomcast", name="spam")))
    calm = await Client.connect(url(secure, "?token=" + token(aud="roomcast", name="calm")))
    listener = await Client.connect(url(secure, "?token=" + token(aud="roomcast", name="ear")))
    try:
        for client, name in ((spammer, "spam"), (calm, "calm"), (listener, "ear")):
            await client.join("limits", name)
        for index in range(10):  # the burst passes
            await spammer.send(type="message", text=f"burst {index}")
        await spammer.send(type="message", text="one too many")
        error = await spammer.recv_type("error")
        assert error["code"] == "rate_limited"
        await calm.send(type="message", text="I am fine")
        assert (await listener.recv_type("message", text="I am fine"))["username"] == "calm"
        for _ in range(40):  # ignoring the errors: a flood
            await spammer.send(type="message", text="flood")
        code, reason = await spammer.expect_close()
        assert code == 1008 and reason is not None and "flood" in reason
        await calm.send(type="message", text="still fine")
        await listener.recv_type("message", text="still fine")
    finally:
        for client in (spammer, calm, listener):
            await client.close()


async def test_public_key_tokens_rs256_and_es256(tmp_path: Path) -> None:
    for name, private in (
        ("rs256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("es256", ec.generate_private_key(ec.SECP256R1())),
    ):
        public_pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        key_file = tmp_path / f"{name}.pem"
        key_file.write_bytes(public_pem)
        env = dict(FAST_ENV, ROOMCAST_AUTH_PUBLIC_KEY_FILE=str(key_file))
        algorithm = "RS256" if name == "rs256" else "ES256"
        claims = {"sub": "k", "name": "keyed", "exp": int(time.time()) + 60}
        signed = jwt.encode(claims, private, algorithm)
        with LocalCluster(1, redis=False, nginx=False, node_env=env) as cluster:
            client = await Client.connect(cluster.nodes[0].url + "?token=" + signed)
            assert (await client.join("pk", "x"))["username"] == "keyed"
            await client.close()
            hs = jwt.encode(claims, SECRET, "HS256")  # a secret-signed token is not accepted
            assert await refused(cluster.nodes[0].url + "?token=" + hs) == 401


def test_roomcast_token_command_issues_a_token_the_node_accepts() -> None:
    env = dict(os.environ, ROOMCAST_AUTH_SECRET=SECRET, ROOMCAST_AUTH_AUDIENCE="roomcast")
    result = subprocess.run(
        [sys.executable, "-m", "roomcast", "token", "u-9", "--name", "dana", "--room", "team-*"],
        env=env, capture_output=True, text=True, timeout=scaled(30), check=True,
    )  # fmt: skip
    claims = jwt.decode(result.stdout.strip(), SECRET, ["HS256"], audience="roomcast")
    assert claims["sub"] == "u-9" and claims["name"] == "dana" and claims["rooms"] == ["team-*"]
    assert claims["exp"] > time.time()
    missing = subprocess.run(
        [sys.executable, "-m", "roomcast", "token", "u-9"],
        env={k: v for k, v in env.items() if k != "ROOMCAST_AUTH_SECRET"},
        capture_output=True, text=True, timeout=scaled(30), check=False,
    )  # fmt: skip
    assert missing.returncode == 2 and "ROOMCAST_AUTH_SECRET" in missing.stderr


async def test_secrets_never_appear_in_logs(secure: LocalCluster) -> None:
    """Even at DEBUG, through refusals, joins and messages: no token secret, no Redis password,
    no token (a bearer credential) in any line a node printed."""
    good = token(aud="roomcast")
    client = await Client.connect(url(secure, "?token=" + good))
    await client.join("logs", "x")
    await client.send(type="message", text="hi")
    await client.recv_type("message")
    await client.close()
    await refused(url(secure, "?token=" + token(aud="nope")))
    secure_node_lines = [line for node in secure.nodes for line in node.process.lines]
    assert secure_node_lines
    for line in secure_node_lines:
        assert SECRET not in line
        assert REDIS_PASSWORD not in line
        assert good not in line
    assert any('"auth":"token"' in line for line in secure_node_lines)
    await asyncio.sleep(0)


def test_issue_token_round_trip() -> None:
    signed = issue_token(SECRET, "s", name="n", rooms=["a"], ttl=60, audience="roomcast")
    claims = jwt.decode(signed, SECRET, ["HS256"], audience="roomcast")
    assert (claims["sub"], claims["name"], claims["rooms"]) == ("s", "n", ["a"])


async def test_nginx_limits_connections_per_client_address() -> None:
    """limit_conn: 256 WebSockets per address through the load balancer, then HTTP 429."""
    with LocalCluster(1, redis=False, node_env=FAST_ENV) as cluster:
        clients = [await Client.connect(cluster.url) for _ in range(256)]
        try:
            assert await refused(cluster.url) == 429
            await clients[0].close()
            await clients[0].ws.wait_closed()
            # A freed slot is usable again, once nginx has finished the closed request (it frees
            # the slot a moment after the client saw the close: CI once got a 429 here).
            deadline = time.monotonic() + scaled(5)
            while True:
                try:
                    clients[0] = await Client.connect(cluster.url)
                    break
                except InvalidStatus as exc:
                    if exc.response.status_code != 429 or time.monotonic() > deadline:
                        raise
        finally:
            await asyncio.gather(*(c.close() for c in clients))


def test_forwarded_for_is_trusted_only_from_the_load_balancer() -> None:
    from roomcast.core.auth import ProxyTrust

    trust = ProxyTrust(["127.0.0.1", "10.0.0.0/8"])
    # From the load balancer: the address it wrote itself, the right-most one, is the client;
    # nothing to its left is believed, even when it looks like another trusted hop (issue 15).
    assert trust.client_address("127.0.0.1", "203.0.113.9") == "203.0.113.9"
    assert trust.client_address("10.1.2.3", "198.51.100.7, 203.0.113.9, 10.9.9.9") == "10.9.9.9"
    # From anyone else the header is a claim, not a fact.
    assert trust.client_address("192.0.2.44", "127.0.0.1") == "192.0.2.44"
    assert trust.client_address("127.0.0.1", None) == "127.0.0.1"
