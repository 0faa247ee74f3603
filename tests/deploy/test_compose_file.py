"""docker-compose.yml offline: what `docker compose up --scale node=N` relies on."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

yaml = pytest.importorskip("yaml", reason="pyyaml is needed: add it to the dev dependencies")

from roomcast.runtime.config import env_names, load_settings  # noqa: E402
from tests.support.compose import DOT_ENV, defaults  # noqa: E402
from tests.support.paths import REPO  # noqa: E402

COMPOSE_FILE = REPO / "docker-compose.yml"
COMPOSE = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES = COMPOSE["services"]


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m)", value)
    assert match, value
    number, unit = int(match[1]), match[2]
    return number / 1000 if unit == "ms" else number * (60 if unit == "m" else 1)


def test_images_come_from_variables_with_the_officialdefaults() -> None:
    assert SERVICES["redis"]["image"] == "${REDIS_IMAGE:-redis:7.4-alpine}"
    assert SERVICES["loadbalancer"]["image"] == "${NGINX_IMAGE:-nginx:1.27-alpine}"
    assert SERVICES["prometheus"]["image"].startswith("${PROMETHEUS_IMAGE:-prom/prometheus:")
    build = SERVICES["node"]["build"]
    assert build["args"]["PYTHON_IMAGE"] == "${PYTHON_IMAGE:-python:3.12-slim}"
    dockerfile = (REPO / build["dockerfile"]).read_text()
    assert "ARG PYTHON_IMAGE=python:3.12-slim" in dockerfile


def test_only_the_loadbalancer_is_published_and_only_on_an_address_the_user_picks() -> None:
    # The optional "cluster" profile's load balancer is checked in test_compose_cluster_profile.
    published = {
        name
        for name, service in SERVICES.items()
        if service.get("ports") and not service.get("profiles")
    }
    assert published == {"loadbalancer"}
    (port,) = SERVICES["loadbalancer"]["ports"]
    assert port == "${ROOMCAST_LB_ADDRESS:-127.0.0.1}:${ROOMCAST_LB_PORT:-8080}:8080"


def test_the_node_service_can_be_scaled() -> None:
    node = SERVICES["node"]
    assert "container_name" not in node and "ports" not in node and "hostname" not in node
    assert sorted(node["expose"]) == ["8000", "9000"]


def test_node_environment_is_read_by_the_node_and_valid() -> None:
    env = {k: defaults(str(v)) for k, v in SERVICES["node"]["environment"].items()}
    assert set(env) <= set(env_names())
    settings = load_settings(env)
    assert settings.host == "0.0.0.0"
    redis_password = defaults(SERVICES["redis"]["environment"]["REDISCLI_AUTH"])
    assert settings.redis_url == f"redis://:{redis_password}@redis:6379/0"
    assert not settings.auth_enabled  # open mode unless .env sets ROOMCAST_AUTH_SECRET
    # With the secret `make compose-env` writes, the node requires tokens.
    secret = {"ROOMCAST_AUTH_SECRET": "0f1e2d3c4b5a6978" * 4}
    assert load_settings({**env, **secret}).auth_enabled
    assert (settings.port, settings.metrics_port) == (8000, 9000)
    # docker stop waits stop_grace_period before SIGKILL: longer than the drain deadline
    assert _seconds(SERVICES["node"]["stop_grace_period"]) > settings.drain_timeout
    health = " ".join(SERVICES["node"]["healthcheck"]["test"])
    assert f"127.0.0.1:{settings.metrics_port}/readyz" in health


def test_start_order_follows_health() -> None:
    assert SERVICES["node"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert SERVICES["loadbalancer"]["depends_on"]["node"]["condition"] == "service_healthy"
    for name in ("redis", "node", "prometheus"):
        assert SERVICES[name]["healthcheck"]["test"], name


def test_config_files_mounted_exist() -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name}: {source}"


def test_dockerignore_keeps_the_build_context_to_the_package() -> None:
    ignore = (REPO / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") :][:3] == ["*", "!pyproject.toml", "!node/roomcast/"]


def test_docker_compose_accepts_the_file() -> None:
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("docker-compose is not installed (the Docker e2e test installs it)")
    for files in (["docker-compose.yml"],
                  ["docker-compose.yml", "observability/compose.prometheus-port.yml"]):  # fmt: skip
        args = [compose, *(x for f in files for x in ("-f", f)), "config", "-q"]
        result = subprocess.run(
            args, cwd=REPO, capture_output=True, text=True, check=False, timeout=60,
            env={**os.environ, **DOT_ENV},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    # Without a Redis password (no .env), compose refuses to start, naming the variable.
    unset = {k: v for k, v in os.environ.items() if k != "ROOMCAST_REDIS_PASSWORD"}
    refused = subprocess.run(
        [compose, "config", "-q"], cwd=REPO, capture_output=True, text=True, check=False,
        timeout=60, env=unset,
    )  # fmt: skip
    assert refused.returncode != 0 and "ROOMCAST_REDIS_PASSWORD" in refused.stderr


def test_no_fixed_redis_password_and_none_on_a_command_line() -> None:
    """Every Redis password comes from .env, which compose requires (`${VAR:?}`: it refuses to
    start without it); redis-server reads it from a file, redis-cli from REDISCLI_AUTH."""
    text = COMPOSE_FILE.read_text()
    assert "roomcast-dev-password" not in text
    for name, service in SERVICES.items():
        flat = json.dumps(service)
        if "ROOMCAST_REDIS_PASSWORD" in flat:
            assert "ROOMCAST_REDIS_PASSWORD:-" not in flat, name  # no default value
            assert "ROOMCAST_REDIS_PASSWORD:?" in flat, name
        commands = json.dumps(
            [service.get("command"), service.get("entrypoint"), service.get("healthcheck")]
        )
        assert "--requirepass" not in commands and "--masterauth" not in commands, name
        assert "redis-cli -a" not in commands, name


def test_redis_memory_is_bounded_below_its_container_limit() -> None:
    for name in ("redis", "redis-cluster-1"):
        service = SERVICES[name]
        flat = json.dumps([service.get("command"), service.get("entrypoint")])
        bound = re.search(r"maxmemory(?: |\\\\n|\", \")(\d+)mb", flat)
        assert bound is not None, (name, flat)
        assert "volatile-ttl" in flat, name
        limit = service["mem_limit"]
        assert limit.endswith("m")
        assert int(bound[1]) <= 0.8 * int(limit.removesuffix("m")), name


def test_redis_and_prometheus_are_hardened() -> None:
    for name in ("redis", "prometheus", "redis-cluster-1", "node", "loadbalancer"):
        service = SERVICES[name]
        assert service["cap_drop"] == ["ALL"], name
        assert service["read_only"] is True, name
        assert "no-new-privileges:true" in service["security_opt"], name
    # Without capabilities the redis image cannot switch users itself: it starts as redis.
    assert SERVICES["redis"]["user"] == "999:1000"
