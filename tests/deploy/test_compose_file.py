"""docker-compose.yml offline: what `docker compose up --scale node=N` relies on."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

yaml = pytest.importorskip("yaml", reason="pyyaml is needed: add it to the dev dependencies")

from roomcast.runtime.config import env_names, load_settings  # noqa: E402
from tests.support.paths import REPO  # noqa: E402

COMPOSE_FILE = REPO / "docker-compose.yml"
COMPOSE = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES = COMPOSE["services"]


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m)", value)
    assert match, value
    number, unit = int(match[1]), match[2]
    return number / 1000 if unit == "ms" else number * (60 if unit == "m" else 1)


def test_images_come_from_variables_with_the_official_defaults() -> None:
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


def _defaults(value: str) -> str:
    """What compose makes of ${NAME:-default} with no .env: the default."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_node_environment_is_read_by_the_node_and_valid() -> None:
    env = {k: _defaults(str(v)) for k, v in SERVICES["node"]["environment"].items()}
    assert set(env) <= set(env_names())
    settings = load_settings(env)
    assert settings.host == "0.0.0.0"
    redis_password = _defaults(SERVICES["redis"]["environment"]["REDIS_PASSWORD"])
    assert f"--requirepass {SERVICES['redis']['environment']['REDIS_PASSWORD']}" in " ".join(
        SERVICES["redis"]["command"]
    )
    assert settings.redis_url == f"redis://:{redis_password}@redis:6379/0"
    assert not settings.auth_enabled  # open mode unless .env sets ROOMCAST_AUTH_SECRET
    # With the secret `make compose-env` writes, the node requires tokens.
    secret = {"ROOMCAST_AUTH_SECRET": "f" * 64}
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
            args, cwd=REPO, capture_output=True, text=True, check=False, timeout=60
        )
        assert result.returncode == 0, result.stderr
