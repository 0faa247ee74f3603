"""Settings from ROOMCAST_* environment variables."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

from roomcast.runtime.config import (
    FILE_VARIABLES,
    FRAME_OVERHEAD_BYTES,
    ConfigError,
    Settings,
    env_name,
    env_names,
    load_settings,
)


def test_defaults() -> None:
    settings = load_settings({})
    assert settings == Settings(
        host="127.0.0.1",
        port=8000,
        metrics_host=None,
        metrics_port=9000,
        redis_url=None,
        node_id=socket.gethostname(),
        max_frame_bytes=65536,
        max_rooms_per_connection=16,
        send_buffer_bytes=1048576,
        rate_limit_per_second=50.0,
        rate_limit_burst=100,
        handshake_timeout=10.0,
        ping_interval=30.0,
        close_timeout=5.0,
        drain_timeout=10.0,
        redis_timeout=5.0,
        history_size=100,
        history_ttl=600.0,
        presence_ttl=15.0,
        compression=False,
        log_level="INFO",
    )
    assert settings.internal_host == "127.0.0.1"


def test_unrelated_variables_are_ignored() -> None:
    assert load_settings({"PATH": "/bin", "ROOMCAST": "x", "roomcast_port": "1"}).port == 8000


def test_load_settings_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROOMCAST_PORT", "8123")
    assert load_settings().port == 8123


def test_settings_are_frozen() -> None:
    settings = load_settings({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("variable", "raw", "field", "expected"),
    [
        ("ROOMCAST_HOST", " 0.0.0.0 ", "host", "0.0.0.0"),
        ("ROOMCAST_PORT", "8080", "port", 8080),
        ("ROOMCAST_PORT", "0", "port", 0),
        ("ROOMCAST_PORT", "65535", "port", 65535),
        ("ROOMCAST_METRICS_HOST", "10.0.0.1", "metrics_host", "10.0.0.1"),
        ("ROOMCAST_METRICS_PORT", "9100", "metrics_port", 9100),
        ("ROOMCAST_REDIS_URL", "redis://redis:6379/0", "redis_url", "redis://redis:6379/0"),
        ("ROOMCAST_REDIS_URL", "rediss://h:6380", "redis_url", "rediss://h:6380"),
        ("ROOMCAST_REDIS_URL", "unix:///tmp/r.sock", "redis_url", "unix:///tmp/r.sock"),
        ("ROOMCAST_REDIS_URL", "  redis://r  ", "redis_url", "redis://r"),
        ("ROOMCAST_REDIS_URL", "", "redis_url", None),
        ("ROOMCAST_REDIS_URL", "   ", "redis_url", None),
        ("ROOMCAST_NODE_ID", "node-1_a.b:c", "node_id", "node-1_a.b:c"),
        ("ROOMCAST_NODE_ID", "n" * 64, "node_id", "n" * 64),
        ("ROOMCAST_MAX_FRAME_BYTES", "256", "max_frame_bytes", 256),
        ("ROOMCAST_MAX_FRAME_BYTES", "16777216", "max_frame_bytes", 16777216),
        ("ROOMCAST_MAX_ROOMS_PER_CONNECTION", "3", "max_rooms_per_connection", 3),
        ("ROOMCAST_MAX_ROOMS_PER_NODE", "7", "max_rooms_per_node", 7),
        ("ROOMCAST_SEND_BUFFER_BYTES", "4096", "send_buffer_bytes", 4096),
        ("ROOMCAST_SEND_BUFFER_TOTAL_BYTES", "1048576", "send_buffer_total_bytes", 1048576),
        ("ROOMCAST_RATE_LIMIT_PER_SECOND", "2.5", "rate_limit_per_second", 2.5),
        ("ROOMCAST_RATE_LIMIT_BURST", "7", "rate_limit_burst", 7),
        ("ROOMCAST_HANDSHAKE_TIMEOUT", "1.5", "handshake_timeout", 1.5),
        ("ROOMCAST_PING_INTERVAL", "0.05", "ping_interval", 0.05),
        ("ROOMCAST_CLOSE_TIMEOUT", "2", "close_timeout", 2.0),
        ("ROOMCAST_DRAIN_TIMEOUT", "0", "drain_timeout", 0.0),
        ("ROOMCAST_REDIS_TIMEOUT", "0.5", "redis_timeout", 0.5),
        ("ROOMCAST_HISTORY_SIZE", "1", "history_size", 1),
        ("ROOMCAST_HISTORY_SIZE", "100000", "history_size", 100000),
        ("ROOMCAST_HISTORY_TTL", "1", "history_ttl", 1.0),
        ("ROOMCAST_HISTORY_BYTES", "1024", "history_bytes", 1024),
        ("ROOMCAST_HISTORY_TTL", "2592000", "history_ttl", 2592000.0),
        ("ROOMCAST_PRESENCE_TTL", "0.3", "presence_ttl", 0.3),
        ("ROOMCAST_COMPRESSION", "true", "compression", True),
        ("ROOMCAST_COMPRESSION", " YES ", "compression", True),
        ("ROOMCAST_COMPRESSION", "1", "compression", True),
        ("ROOMCAST_COMPRESSION", "on", "compression", True),
        ("ROOMCAST_COMPRESSION", "False", "compression", False),
        ("ROOMCAST_COMPRESSION", "0", "compression", False),
        ("ROOMCAST_COMPRESSION", "no", "compression", False),
        ("ROOMCAST_COMPRESSION", "off", "compression", False),
        ("ROOMCAST_LOG_LEVEL", "debug", "log_level", "DEBUG"),
        ("ROOMCAST_LOG_LEVEL", " Warning ", "log_level", "WARNING"),
        ("ROOMCAST_LOG_LEVEL", "ERROR", "log_level", "ERROR"),
    ],
)
def test_each_variable_parsed(variable: str, raw: str, field: str, expected: object) -> None:
    settings = load_settings({variable: raw})
    value = getattr(settings, field)
    assert value == expected
    assert type(value) is type(expected)
    # Everything else stays at its default.
    defaults = load_settings({})
    for other in dataclasses.fields(Settings):
        if other.name != field:
            assert getattr(settings, other.name) == getattr(defaults, other.name)


def test_defaults_hold_one_clients_legal_burst_of_largest_frames() -> None:
    settings = load_settings({})
    burst = settings.message_rate_burst * settings.max_frame_bytes
    assert settings.history_bytes >= burst
    frame = settings.max_frame_bytes + FRAME_OVERHEAD_BYTES
    # Never tighter than the message limits at the largest frame: those refusals name the
    # message (its id), the byte budget's cannot.
    assert settings.client_receive_bytes_burst > settings.client_message_rate_burst * frame
    assert settings.client_receive_bytes_burst > settings.message_rate_burst * frame
    assert (
        settings.client_receive_bytes_per_second > settings.client_message_rate_per_second * frame
    )


def test_history_may_exceed_the_send_buffer() -> None:
    # Catch-ups and answers are streamed page by page: no coupling to the send bound.
    settings = load_settings(
        {"ROOMCAST_SEND_BUFFER_BYTES": "65536", "ROOMCAST_HISTORY_BYTES": "4194304"}
    )
    assert settings.history_bytes == 4 * 1024 * 1024


# What k8s/15-secrets.yaml and docker-compose.yml used to ship, and guessable stand-ins.
K8S_PLACEHOLDER = "replace-me-with-openssl-rand-hex-32-0123456789abcdef"


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("ROOMCAST_AUTH_SECRET", K8S_PLACEHOLDER, "replace-me"),
        ("ROOMCAST_AUTH_SECRET", "CHANGEME-" + "0a1b2c3d" * 4, "changeme"),
        ("ROOMCAST_AUTH_SECRET", "a" * 64, "distinct characters"),
        ("ROOMCAST_AUTH_SECRET", "abab" * 10, "distinct characters"),
        ("ROOMCAST_API_KEYS", K8S_PLACEHOLDER, "replace-me"),
        ("ROOMCAST_API_KEYS", "0a1b2c3d4e5f6a7b8c9d0e1f,k" + "k" * 23, "key 2"),
        ("ROOMCAST_REDIS_URL", "redis://:replace-me-redis-password@redis:6379/0", "replace-me"),
        ("ROOMCAST_REDIS_URL", "redis://:roomcast-dev-password@redis:6379/0", "roomcast-dev"),
    ],
)
def test_placeholder_and_guessable_secrets_refused(variable: str, value: str, said: str) -> None:
    with pytest.raises(ConfigError, match="refusing to start with guessable secrets") as caught:
        load_settings({variable: value})
    message = str(caught.value)
    assert variable in message and said in message and "openssl rand" in message
    assert value not in message  # the secret itself is never echoed


def test_placeholder_secret_file_refused(tmp_path: Path) -> None:
    placeholder = tmp_path / "auth-secret"
    placeholder.write_text(K8S_PLACEHOLDER + "\n")
    with pytest.raises(ConfigError, match="ROOMCAST_AUTH_SECRET: it contains 'replace-me'"):
        load_settings({"ROOMCAST_AUTH_SECRET_FILE": str(placeholder)})


def test_random_secrets_accepted() -> None:
    import secrets

    for _ in range(200):
        settings = load_settings(
            {
                "ROOMCAST_AUTH_SECRET": secrets.token_hex(32),
                "ROOMCAST_API_KEYS": secrets.token_hex(12),
                "ROOMCAST_REDIS_URL": f"redis://:{secrets.token_urlsafe(16)}@redis:6379/0",
            }
        )
        assert settings.auth_enabled


def test_metrics_host_overrides_internal_host() -> None:
    settings = load_settings({"ROOMCAST_HOST": "0.0.0.0", "ROOMCAST_METRICS_HOST": "127.0.0.2"})
    assert settings.host == "0.0.0.0"
    assert settings.internal_host == "127.0.0.2"
    assert load_settings({"ROOMCAST_HOST": "0.0.0.0"}).internal_host == "0.0.0.0"


@pytest.mark.parametrize(
    ("variable", "raw", "expected_message"),
    [
        ("ROOMCAST_PORT", "http", "ROOMCAST_PORT='http': expected a whole number"),
        ("ROOMCAST_PORT", "", "ROOMCAST_PORT='': expected a whole number"),
        ("ROOMCAST_PORT", "80.5", "ROOMCAST_PORT='80.5': expected a whole number"),
        ("ROOMCAST_PORT", "-1", "ROOMCAST_PORT='-1': expected a number from 0 to 65535"),
        ("ROOMCAST_PORT", "65536", "ROOMCAST_PORT='65536': expected a number from 0 to 65535"),
        ("ROOMCAST_METRICS_PORT", "x", "ROOMCAST_METRICS_PORT='x': expected a whole number"),
        ("ROOMCAST_HOST", "  ", "ROOMCAST_HOST: expected an address to listen on"),
        ("ROOMCAST_METRICS_HOST", "", "ROOMCAST_METRICS_HOST: expected an address"),
        (
            "ROOMCAST_REDIS_URL",
            "http://redis:6379",
            "ROOMCAST_REDIS_URL: expected a redis://, rediss:// or unix:// URL",
        ),
        ("ROOMCAST_NODE_ID", "", "ROOMCAST_NODE_ID='': expected 1-64 letters, digits or -_.:"),
        ("ROOMCAST_NODE_ID", "n" * 65, "ROOMCAST_NODE_ID="),
        ("ROOMCAST_NODE_ID", "has space", "ROOMCAST_NODE_ID='has space'"),
        ("ROOMCAST_NODE_ID", "a/b", "ROOMCAST_NODE_ID='a/b'"),
        ("ROOMCAST_MAX_FRAME_BYTES", "255", "ROOMCAST_MAX_FRAME_BYTES='255': expected a number"),
        ("ROOMCAST_MAX_FRAME_BYTES", "16777217", "ROOMCAST_MAX_FRAME_BYTES='16777217'"),
        ("ROOMCAST_MAX_ROOMS_PER_CONNECTION", "0", "ROOMCAST_MAX_ROOMS_PER_CONNECTION='0'"),
        ("ROOMCAST_MAX_ROOMS_PER_NODE", "0", "ROOMCAST_MAX_ROOMS_PER_NODE='0'"),
        ("ROOMCAST_SEND_BUFFER_BYTES", "4095", "ROOMCAST_SEND_BUFFER_BYTES='4095'"),
        (
            "ROOMCAST_SEND_BUFFER_TOTAL_BYTES",
            "1048575",
            "ROOMCAST_SEND_BUFFER_TOTAL_BYTES='1048575'",
        ),
        ("ROOMCAST_RATE_LIMIT_PER_SECOND", "fast", "ROOMCAST_RATE_LIMIT_PER_SECOND='fast'"),
        ("ROOMCAST_RATE_LIMIT_PER_SECOND", "0", "ROOMCAST_RATE_LIMIT_PER_SECOND='0'"),
        ("ROOMCAST_RATE_LIMIT_PER_SECOND", "nan", "ROOMCAST_RATE_LIMIT_PER_SECOND='nan'"),
        ("ROOMCAST_RATE_LIMIT_PER_SECOND", "inf", "ROOMCAST_RATE_LIMIT_PER_SECOND='inf'"),
        ("ROOMCAST_RATE_LIMIT_BURST", "0", "ROOMCAST_RATE_LIMIT_BURST='0'"),
        ("ROOMCAST_RATE_LIMIT_BURST", "1.5", "ROOMCAST_RATE_LIMIT_BURST='1.5'"),
        ("ROOMCAST_HANDSHAKE_TIMEOUT", "0", "ROOMCAST_HANDSHAKE_TIMEOUT='0'"),
        ("ROOMCAST_PING_INTERVAL", "-1", "ROOMCAST_PING_INTERVAL='-1'"),
        ("ROOMCAST_CLOSE_TIMEOUT", "601", "ROOMCAST_CLOSE_TIMEOUT='601'"),
        ("ROOMCAST_DRAIN_TIMEOUT", "-0.5", "ROOMCAST_DRAIN_TIMEOUT='-0.5'"),
        ("ROOMCAST_REDIS_TIMEOUT", "soon", "ROOMCAST_REDIS_TIMEOUT='soon'"),
        ("ROOMCAST_HISTORY_SIZE", "0", "ROOMCAST_HISTORY_SIZE='0': expected a number"),
        ("ROOMCAST_HISTORY_SIZE", "100001", "ROOMCAST_HISTORY_SIZE='100001'"),
        ("ROOMCAST_HISTORY_TTL", "0.5", "ROOMCAST_HISTORY_TTL='0.5'"),
        ("ROOMCAST_PRESENCE_TTL", "0.2", "ROOMCAST_PRESENCE_TTL='0.2'"),
        ("ROOMCAST_PRESENCE_TTL", "long", "ROOMCAST_PRESENCE_TTL='long'"),
        ("ROOMCAST_COMPRESSION", "maybe", "ROOMCAST_COMPRESSION='maybe': expected true/false"),
        ("ROOMCAST_LOG_LEVEL", "TRACE", "ROOMCAST_LOG_LEVEL='TRACE': expected one of DEBUG"),
        ("ROOMCAST_LOG_LEVEL", "CRITICAL", "ROOMCAST_LOG_LEVEL='CRITICAL'"),
        ("ROOMCAST_HOOK_JOIN_URL", "ftp://app/x", "expected an http:// or https:// URL"),
        ("ROOMCAST_HOOK_JOIN_URL", "app:8000/hooks", "expected an http:// or https:// URL"),
        ("ROOMCAST_HOOK_CONNECT_URL", "http://app:99999/", "not a URL (bad port?)"),
        ("ROOMCAST_HOOK_PUBLISH_URL", "http://u:p@app/", "no user:password@"),
        ("ROOMCAST_HOOK_JOIN_ROOMS", " , ", "expected room-name patterns"),
        ("ROOMCAST_HOOK_PUBLISH_ROOMS", "a b", "is not a room-name pattern"),
        ("ROOMCAST_HOOK_JOIN_FAIL_MODE", "maybe", "expected open or closed"),
        ("ROOMCAST_HOOK_PUBLISH_FAIL_MODE", "", "expected open or closed"),
        ("ROOMCAST_HOOK_TIMEOUT", "0", "ROOMCAST_HOOK_TIMEOUT='0': expected a number"),
        ("ROOMCAST_HOOK_TIMEOUT", "61", "ROOMCAST_HOOK_TIMEOUT='61'"),
        ("ROOMCAST_HOOK_MAX_CONCURRENCY", "0", "ROOMCAST_HOOK_MAX_CONCURRENCY='0'"),
        ("ROOMCAST_HOOK_RETRIES", "6", "ROOMCAST_HOOK_RETRIES='6'"),
        ("ROOMCAST_HOOK_BREAKER_FAILURES", "0", "ROOMCAST_HOOK_BREAKER_FAILURES='0'"),
        ("ROOMCAST_HOOK_BREAKER_RESET", "0", "ROOMCAST_HOOK_BREAKER_RESET='0'"),
        ("ROOMCAST_HOOK_MAX_RESPONSE_BYTES", "10", "ROOMCAST_HOOK_MAX_RESPONSE_BYTES='10'"),
        ("ROOMCAST_HOOK_SECRET", "short", "use at least 32 characters"),
    ],
)
def test_bad_value_names_variable(variable: str, raw: str, expected_message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({variable: raw})
    message = str(info.value)
    assert message.startswith("invalid configuration:\n  ")
    assert expected_message in message
    assert variable in message


def test_redis_url_value_is_not_echoed() -> None:
    # URLs may carry passwords; the message names the variable but not its value.
    with pytest.raises(ConfigError) as info:
        load_settings({"ROOMCAST_REDIS_URL": "http://user:secret@redis"})
    assert "secret" not in str(info.value)
    assert "ROOMCAST_REDIS_URL" in str(info.value)


def test_several_bad_values_reported_together() -> None:
    env = {
        "ROOMCAST_PORT": "eighty",
        "ROOMCAST_LOG_LEVEL": "LOUD",
        "ROOMCAST_COMPRESSION": "sometimes",
        "ROOMCAST_HOST": "0.0.0.0",  # fine
    }
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    lines = str(info.value).splitlines()
    assert lines[0] == "invalid configuration:"
    assert len(lines) == 4
    problems = [line.strip() for line in lines[1:]]
    assert problems == [
        "ROOMCAST_PORT='eighty': expected a whole number",
        "ROOMCAST_COMPRESSION='sometimes': expected true/false (or 1/0, yes/no, on/off)",
        "ROOMCAST_LOG_LEVEL='LOUD': expected one of DEBUG, INFO, WARNING, ERROR",
    ]


def test_config_error_is_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_env_names() -> None:
    names = env_names()
    for required in (
        "ROOMCAST_PORT",
        "ROOMCAST_METRICS_PORT",
        "ROOMCAST_REDIS_URL",
        "ROOMCAST_NODE_ID",
        "ROOMCAST_LOG_LEVEL",
        "ROOMCAST_HOST",
    ):
        assert required in names
    # Every setting, plus a _FILE variant for each secret.
    assert len(names) == len(set(names)) == len(dataclasses.fields(Settings)) + len(FILE_VARIABLES)
    assert all(name.startswith("ROOMCAST_") and name == name.upper() for name in names)
    assert env_name("max_frame_bytes") == "ROOMCAST_MAX_FRAME_BYTES"


def _public_key_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def test_bad_public_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="ROOMCAST_AUTH_PUBLIC_KEY"):
        load_settings({"ROOMCAST_AUTH_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----\nnope"})


def test_every_env_name_is_read() -> None:
    # Each advertised variable really changes the settings (none is silently ignored).
    samples = {
        "ROOMCAST_HOST": "0.0.0.0",
        "ROOMCAST_PORT": "1",
        "ROOMCAST_METRICS_HOST": "0.0.0.0",
        "ROOMCAST_METRICS_PORT": "2",
        "ROOMCAST_REDIS_URL": "redis://r",
        "ROOMCAST_REDIS_MODE": "cluster",
        "ROOMCAST_REDIS_SENTINELS": "s1:26379",
        "ROOMCAST_REDIS_SENTINEL_MASTER": "primary",
        "ROOMCAST_REDIS_SENTINEL_USERNAME": "watcher",
        "ROOMCAST_REDIS_SENTINEL_PASSWORD": "sentinel-secret",
        "ROOMCAST_NODE_ID": "zz-test-node",
        "ROOMCAST_MAX_FRAME_BYTES": "1000",
        "ROOMCAST_MAX_ROOMS_PER_CONNECTION": "2",
        "ROOMCAST_MAX_ROOMS_PER_NODE": "3000",
        "ROOMCAST_MAX_CONNECTIONS": "777",
        "ROOMCAST_SEND_BUFFER_BYTES": "5000",
        "ROOMCAST_SEND_BUFFER_TOTAL_BYTES": "2097152",
        "ROOMCAST_RATE_LIMIT_PER_SECOND": "3",
        "ROOMCAST_RATE_LIMIT_BURST": "4",
        "ROOMCAST_HANDSHAKE_TIMEOUT": "6",
        "ROOMCAST_PING_INTERVAL": "7",
        "ROOMCAST_CLOSE_TIMEOUT": "8",
        "ROOMCAST_DRAIN_TIMEOUT": "9",
        "ROOMCAST_REDIS_TIMEOUT": "11",
        "ROOMCAST_HISTORY_SIZE": "12",
        "ROOMCAST_HISTORY_TTL": "13",
        "ROOMCAST_HISTORY_BYTES": "4096",
        "ROOMCAST_LAG_TIMEOUT": "3",
        "ROOMCAST_PRESENCE_TTL": "14",
        "ROOMCAST_COMPRESSION": "true",
        "ROOMCAST_LOG_LEVEL": "DEBUG",
        "ROOMCAST_AUTH_SECRET": "9f2c4e7a1b8d3f6e0a5c9b2d7e4f1a8c",
        "ROOMCAST_USER_ID_KEY": "3c8e1f5a9d2b7c4e0f6a1d8b5e2c9f7a",
        "ROOMCAST_AUTH_PUBLIC_KEY": _public_key_pem(),
        "ROOMCAST_AUTH_AUDIENCE": "chat",
        "ROOMCAST_AUTH_ISSUER": "me",
        "ROOMCAST_ALLOWED_ORIGINS": "https://a.example",
        "ROOMCAST_TRUSTED_PROXIES": "10.0.0.0/8",
        "ROOMCAST_MESSAGE_RATE_PER_SECOND": "1",
        "ROOMCAST_MESSAGE_RATE_BURST": "1",
        "ROOMCAST_TYPING_RATE_PER_SECOND": "1",
        "ROOMCAST_TYPING_RATE_BURST": "1",
        "ROOMCAST_API_KEYS": "k3y-of-24-characters-abc" + ",another-key-of-24-chars!",
        "ROOMCAST_API_RATE_PER_SECOND": "1",
        "ROOMCAST_API_RATE_BURST": "1",
        "ROOMCAST_SSE_HEARTBEAT": "1",
        "ROOMCAST_HTTP_IDLE_TIMEOUT": "1",
        "ROOMCAST_GC_THRESHOLD": "700",
        "ROOMCAST_MAX_FRAGMENTS": "3",
        "ROOMCAST_CLIENT_RECEIVE_BYTES_PER_SECOND": "4096",
        "ROOMCAST_CLIENT_RECEIVE_BYTES_BURST": "1000000",
        "ROOMCAST_AUTH_LEEWAY": "5",
        "ROOMCAST_TOKEN_REFRESH_NOTICE": "7",
        "ROOMCAST_JOIN_RATE_PER_SECOND": "3",
        "ROOMCAST_JOIN_RATE_BURST": "3",
        "ROOMCAST_CLIENT_MESSAGE_RATE_PER_SECOND": "3",
        "ROOMCAST_CLIENT_MESSAGE_RATE_BURST": "3",
        "ROOMCAST_CLIENT_TYPING_RATE_PER_SECOND": "3",
        "ROOMCAST_CLIENT_TYPING_RATE_BURST": "3",
        "ROOMCAST_CLIENT_TOKEN_CHECK_RATE_PER_SECOND": "3",
        "ROOMCAST_CLIENT_TOKEN_CHECK_RATE_BURST": "3",
        "ROOMCAST_CLIENT_HISTORY_BYTES_PER_SECOND": "3000",
        "ROOMCAST_CLIENT_HISTORY_BYTES_BURST": "3000",
        "ROOMCAST_CLIENT_HISTORY_WRITE_BYTES_PER_SECOND": "3000",
        "ROOMCAST_CLIENT_HISTORY_WRITE_BYTES_BURST": "3000",
        "ROOMCAST_CLIENT_JOIN_RATE_PER_SECOND": "3",
        "ROOMCAST_CLIENT_JOIN_RATE_BURST": "3",
        "ROOMCAST_ROOM_MESSAGE_RATE_PER_SECOND": "3",
        "ROOMCAST_ROOM_MESSAGE_RATE_BURST": "3",
        "ROOMCAST_ROOM_TYPING_RATE_PER_SECOND": "3",
        "ROOMCAST_ROOM_TYPING_RATE_BURST": "3",
        "ROOMCAST_BIG_ROOM_MEMBERS": "20",
        "ROOMCAST_BIG_ROOM_INTERVAL": "0.5",
        "ROOMCAST_HOOK_CONNECT_URL": "http://app:8000/hooks/connect",
        "ROOMCAST_HOOK_JOIN_URL": "https://app.example/hooks/join",
        "ROOMCAST_HOOK_PUBLISH_URL": "http://10.0.0.1/hooks/publish",
        "ROOMCAST_HOOK_JOIN_ROOMS": "support:*,dm:*",
        "ROOMCAST_HOOK_PUBLISH_ROOMS": "lobby",
        "ROOMCAST_HOOK_JOIN_FAIL_MODE": "open",
        "ROOMCAST_HOOK_PUBLISH_FAIL_MODE": "open",
        "ROOMCAST_HOOK_TIMEOUT": "0.5",
        "ROOMCAST_HOOK_MAX_CONCURRENCY": "3",
        "ROOMCAST_HOOK_RETRIES": "0",
        "ROOMCAST_HOOK_BREAKER_FAILURES": "3",
        "ROOMCAST_HOOK_BREAKER_RESET": "3",
        "ROOMCAST_HOOK_MAX_RESPONSE_BYTES": "4096",
        "ROOMCAST_HOOK_SECRET": "h" * 32,
        "ROOMCAST_ADMISSION_RATE_PER_SECOND": "250",
        "ROOMCAST_ADMISSION_BURST": "50",
        "ROOMCAST_ADMISSION_MAX_RETRY_AFTER": "10",
        "ROOMCAST_ADMISSION_PER_ADDRESS_RATE_PER_SECOND": "25",
        "ROOMCAST_ADMISSION_PER_ADDRESS_BURST": "30",
    }
    file_variants = {
        name + "_FILE"
        for name in (
            "ROOMCAST_AUTH_SECRET", "ROOMCAST_AUTH_PUBLIC_KEY", "ROOMCAST_REDIS_URL",
            "ROOMCAST_API_KEYS", "ROOMCAST_REDIS_SENTINEL_PASSWORD", "ROOMCAST_HOOK_SECRET",
            "ROOMCAST_USER_ID_KEY",
        )
    }  # fmt: skip
    assert set(samples) | file_variants == set(env_names())
    defaults = load_settings({})
    # Variables only valid together with others (the Redis topology) come with their partners.
    partners = {
        "ROOMCAST_REDIS_MODE": {"ROOMCAST_REDIS_URL": "redis://r"},
        "ROOMCAST_REDIS_SENTINELS": {
            "ROOMCAST_REDIS_MODE": "sentinel",
            "ROOMCAST_REDIS_SENTINEL_MASTER": "m",
        },
        "ROOMCAST_REDIS_SENTINEL_MASTER": {
            "ROOMCAST_REDIS_MODE": "sentinel",
            "ROOMCAST_REDIS_SENTINELS": "s:1",
        },
        "ROOMCAST_REDIS_SENTINEL_USERNAME": {
            "ROOMCAST_REDIS_MODE": "sentinel",
            "ROOMCAST_REDIS_SENTINELS": "s:1",
            "ROOMCAST_REDIS_SENTINEL_MASTER": "m",
            "ROOMCAST_REDIS_SENTINEL_PASSWORD": "p",
        },
        "ROOMCAST_REDIS_SENTINEL_PASSWORD": {
            "ROOMCAST_REDIS_MODE": "sentinel",
            "ROOMCAST_REDIS_SENTINELS": "s:1",
            "ROOMCAST_REDIS_SENTINEL_MASTER": "m",
        },
    }
    for name, raw in samples.items():
        field = name.removeprefix("ROOMCAST_").lower()
        env = dict(partners.get(name, {}), **{name: raw})
        assert getattr(load_settings(env), field) != getattr(defaults, field), name


def test_api_keys_must_be_long_and_stay_out_of_repr() -> None:
    with pytest.raises(ConfigError, match="ROOMCAST_API_KEYS: each key needs at least 24"):
        load_settings({"ROOMCAST_API_KEYS": "short"})
    first, second = "a1b2c3d4e5f6" * 2, "f6e5d4c3b2a1" * 2 + "9z8y7x"
    settings = load_settings({"ROOMCAST_API_KEYS": f" {first} , {second}"})
    assert settings.api_keys == (first, second)
    assert first not in repr(settings)


def test_secrets_come_from_files_and_never_show_in_repr(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret = "0f1e2d3c4b5a69788796a5b4c3d2e1f0" + "a7b6c5d4"
    secret_file.write_text(secret + "\n")
    settings = load_settings({"ROOMCAST_AUTH_SECRET_FILE": str(secret_file)})
    assert settings.auth_secret == secret
    assert secret not in repr(settings)
    with pytest.raises(ConfigError, match="ROOMCAST_AUTH_SECRET_FILE"):
        load_settings({"ROOMCAST_AUTH_SECRET_FILE": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="both set"):
        load_settings(
            {"ROOMCAST_AUTH_SECRET_FILE": str(secret_file), "ROOMCAST_AUTH_SECRET": "g" * 40}
        )
    with pytest.raises(ConfigError, match="32 characters"):
        load_settings({"ROOMCAST_AUTH_SECRET": "short"})


def test_redis_mode_defaults_to_standalone() -> None:
    settings = load_settings({"ROOMCAST_REDIS_URL": "redis://r:6379/0"})
    assert settings.redis_mode == "standalone" and settings.uses_redis
    assert settings.redis_sentinels == () and settings.redis_sentinel_master is None
    assert not load_settings({}).uses_redis


def test_cluster_mode_takes_a_list_of_seeds() -> None:
    seeds = "redis://:pw@10.0.0.1:7000, 10.0.0.2:7001,rediss://c:7002"
    settings = load_settings({"ROOMCAST_REDIS_MODE": "Cluster", "ROOMCAST_REDIS_URL": seeds})
    assert settings.redis_mode == "cluster"
    assert settings.redis_url == seeds.strip()


def test_sentinel_mode_settings() -> None:
    settings = load_settings(
        {
            "ROOMCAST_REDIS_MODE": "sentinel",
            "ROOMCAST_REDIS_SENTINELS": "s1:26379, s2:26379,[::1]:26380",
            "ROOMCAST_REDIS_SENTINEL_MASTER": "roomcast",
        }
    )
    assert settings.redis_sentinels == ("s1:26379", "s2:26379", "[::1]:26380")
    assert settings.redis_sentinel_master == "roomcast"
    assert settings.redis_url is None and settings.uses_redis  # no URL needed
    with_password = load_settings(
        {
            "ROOMCAST_REDIS_MODE": "sentinel",
            "ROOMCAST_REDIS_SENTINELS": "s1:26379",
            "ROOMCAST_REDIS_SENTINEL_MASTER": "roomcast",
            "ROOMCAST_REDIS_URL": "redis://:secret@primary/0",
        }
    )
    assert with_password.redis_url == "redis://:secret@primary/0"
    assert with_password.redis_sentinel_password is None


def test_sentinel_credentials_are_their_own_and_stay_out_of_repr(tmp_path: Path) -> None:
    base = {
        "ROOMCAST_REDIS_MODE": "sentinel",
        "ROOMCAST_REDIS_SENTINELS": "s1:26379",
        "ROOMCAST_REDIS_SENTINEL_MASTER": "roomcast",
    }
    password_file = tmp_path / "sentinel-password"
    password_file.write_text("from-a-file\n")
    settings = load_settings(
        dict(
            base,
            ROOMCAST_REDIS_SENTINEL_USERNAME="watcher",
            ROOMCAST_REDIS_SENTINEL_PASSWORD_FILE=str(password_file),
        )
    )
    assert settings.redis_sentinel_username == "watcher"
    assert settings.redis_sentinel_password == "from-a-file"
    assert "from-a-file" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "expected_message"),
    [
        ({"ROOMCAST_REDIS_MODE": "sharded"}, "ROOMCAST_REDIS_MODE='sharded': expected one of"),
        (
            {"ROOMCAST_REDIS_MODE": "cluster"},
            "ROOMCAST_REDIS_MODE=cluster needs ROOMCAST_REDIS_URL",
        ),
        (
            {"ROOMCAST_REDIS_URL": "redis://a:1,redis://b:2"},
            "several URLs are seeds of a Redis Cluster: set ROOMCAST_REDIS_MODE=cluster",
        ),
        (
            {"ROOMCAST_REDIS_MODE": "cluster", "ROOMCAST_REDIS_URL": "unix:///tmp/r.sock"},
            "Redis Cluster seeds are redis:// or rediss:// URLs",
        ),
        (
            {"ROOMCAST_REDIS_MODE": "cluster", "ROOMCAST_REDIS_URL": "redis://a:1/3"},
            "Redis Cluster has only database 0",
        ),
        (
            {"ROOMCAST_REDIS_MODE": "cluster", "ROOMCAST_REDIS_URL": "redis://a:1,b"},
            "each seed after the first is a URL or host:port",
        ),
        (
            {"ROOMCAST_REDIS_MODE": "cluster", "ROOMCAST_REDIS_URL": "redis://a:x"},
            "a seed URL has an invalid port",
        ),
        (
            {"ROOMCAST_REDIS_MODE": "sentinel", "ROOMCAST_REDIS_SENTINEL_MASTER": "m"},
            "ROOMCAST_REDIS_MODE=sentinel needs ROOMCAST_REDIS_SENTINELS",
        ),
        (
            {"ROOMCAST_REDIS_MODE": "sentinel", "ROOMCAST_REDIS_SENTINELS": "s:1"},
            "ROOMCAST_REDIS_MODE=sentinel needs ROOMCAST_REDIS_SENTINEL_MASTER",
        ),
        ({"ROOMCAST_REDIS_SENTINELS": "s:1"}, "need ROOMCAST_REDIS_MODE=sentinel"),
        ({"ROOMCAST_REDIS_SENTINEL_MASTER": "m"}, "need ROOMCAST_REDIS_MODE=sentinel"),
        ({"ROOMCAST_REDIS_SENTINEL_PASSWORD": "p"}, "need ROOMCAST_REDIS_MODE=sentinel"),
        (
            {
                "ROOMCAST_REDIS_MODE": "sentinel",
                "ROOMCAST_REDIS_SENTINELS": "s1:1",
                "ROOMCAST_REDIS_SENTINEL_MASTER": "m",
                "ROOMCAST_REDIS_SENTINEL_USERNAME": "watcher",
            },
            "ROOMCAST_REDIS_SENTINEL_USERNAME needs ROOMCAST_REDIS_SENTINEL_PASSWORD",
        ),
        (
            {
                "ROOMCAST_REDIS_MODE": "sentinel",
                "ROOMCAST_REDIS_SENTINELS": "s1",
                "ROOMCAST_REDIS_SENTINEL_MASTER": "m",
            },
            "ROOMCAST_REDIS_SENTINELS: 's1' is not host:port",
        ),
        (
            {
                "ROOMCAST_REDIS_MODE": "sentinel",
                "ROOMCAST_REDIS_SENTINELS": "s1:1",
                "ROOMCAST_REDIS_SENTINEL_MASTER": "m",
                "ROOMCAST_REDIS_URL": "redis://a,redis://b",
            },
            "in sentinel mode, one redis:// or rediss:// URL",
        ),
    ],
)
def test_bad_redis_topology_is_a_clear_config_error(
    env: dict[str, str], expected_message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert expected_message in str(info.value)


def test_cluster_seed_passwords_are_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(
            {"ROOMCAST_REDIS_MODE": "cluster", "ROOMCAST_REDIS_URL": "redis://:hunter2@a:1/5"}
        )
    assert "hunter2" not in str(info.value)
