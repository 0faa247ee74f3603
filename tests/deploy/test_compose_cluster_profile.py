"""docker-compose.yml's optional "cluster" profile, offline: a 3-primary Redis Cluster and a second
stack of nodes and nginx pointed at it, without changing the default profile."""

from __future__ import annotations

import os
import posixpath
import shutil
import subprocess
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="pyyaml is needed: add it to the dev dependencies")

from roomcast.runtime.config import env_names, load_settings  # noqa: E402
from tests.support.compose import DOT_ENV, defaults  # noqa: E402
from tests.support.paths import REPO  # noqa: E402

COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
DEFAULT = {"redis", "node", "loadbalancer", "prometheus"}
CLUSTER_REDIS = {"redis-cluster-1", "redis-cluster-2", "redis-cluster-3"}


def test_default_profile_is_unchanged() -> None:
    assert {name for name, s in SERVICES.items() if not s.get("profiles")} == DEFAULT
    for name in DEFAULT:
        assert "networks" not in SERVICES[name], name  # the default network, as before


def test_cluster_profile_services() -> None:
    cluster = {name for name, s in SERVICES.items() if s.get("profiles") == ["cluster"]}
    assert cluster == CLUSTER_REDIS | {
        "redis-cluster-volumes",
        "redis-cluster-init",
        "node-cluster",
        "loadbalancer-cluster",
    }
    for name in cluster - {"redis-cluster-volumes"}:  # no network at all
        assert SERVICES[name]["networks"] in (["cluster"], {"cluster": {"aliases": ["node"]}}), name
    for name in CLUSTER_REDIS:
        command = SERVICES[name]["command"]
        assert command[command.index("--cluster-enabled") + 1] == "yes"
        assert command[command.index("--cluster-require-full-coverage") + 1] == "no"
    init = " ".join(SERVICES["redis-cluster-init"]["entrypoint"])
    assert "--cluster create" in init
    for name in CLUSTER_REDIS:
        assert name in init
        assert SERVICES["redis-cluster-init"]["depends_on"][name]["condition"] == "service_healthy"


def test_cluster_redis_keeps_its_identity_where_its_user_may_write() -> None:
    """Each shard's nodes.conf (its node id and slots) is on a volume of its own, so a restarted
    container is the same cluster node; the volume and the tmpfs are the redis user's whatever
    the image (with a root-owned /data, redis-server exited "Can't open /data/nodes.conf in
    order to acquire a lock: Permission denied" and the container never became healthy)."""
    job = SERVICES["redis-cluster-volumes"]
    command, user, *chowned = job["entrypoint"]
    assert command == "chown"
    mounted = dict(reversed(v.split(":", 1)) for v in job["volumes"])  # path -> volume
    assert set(chowned) == set(mounted)
    assert job["network_mode"] == "none" and job["read_only"] is True
    assert job["cap_drop"] == ["ALL"] and job["cap_add"] == ["CHOWN"]
    seen: set[str] = set()
    for name in sorted(CLUSTER_REDIS):
        service = SERVICES[name]
        assert service["user"] == user
        uid, gid = user.split(":")
        command = service["command"]
        state = posixpath.dirname(command[command.index("--cluster-config-file") + 1])
        (volume,) = [v.split(":")[0] for v in service["volumes"] if v.split(":")[1] == state]
        assert volume in COMPOSE["volumes"] and volume not in seen, name  # named, one each
        seen.add(volume)
        assert volume in mounted.values(), name  # chowned to the user before the shard starts
        assert service["depends_on"]["redis-cluster-volumes"] == {
            "condition": "service_completed_successfully"
        }
        for tmpfs in service["tmpfs"]:
            path, _, options = tmpfs.partition(":")
            assert path == "/tmp" or {f"uid={uid}", f"gid={gid}"} <= set(options.split(",")), name
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name


def test_cluster_nodes_run_in_cluster_mode_against_the_cluster() -> None:
    node = SERVICES["node-cluster"]
    env = {k: defaults(str(v)) for k, v in node["environment"].items()}
    assert set(env) <= set(env_names())
    settings = load_settings(env)
    assert settings.redis_mode == "cluster"
    assert settings.redis_url is not None
    hosts = {seed.rsplit("@", 1)[-1].split(":")[0] for seed in settings.redis_url.split(",")}
    assert hosts == CLUSTER_REDIS
    # Everything else is the default node's: same image, probes, hardening.
    for key in ("image", "healthcheck", "read_only", "cap_drop", "stop_grace_period", "expose"):
        assert node[key] == SERVICES["node"][key], key
    assert node["networks"]["cluster"]["aliases"] == ["node"]  # what nginx's config resolves
    assert node["depends_on"]["redis-cluster-init"]["condition"] == (
        "service_completed_successfully"
    )


def test_cluster_loadbalancer_has_its_own_port() -> None:
    balancer = SERVICES["loadbalancer-cluster"]
    (port,) = balancer["ports"]
    assert port == "${ROOMCAST_LB_ADDRESS:-127.0.0.1}:${ROOMCAST_CLUSTER_LB_PORT:-8081}:8080"
    assert balancer["volumes"] == SERVICES["loadbalancer"]["volumes"]
    assert balancer["depends_on"] == {"node-cluster": {"condition": "service_healthy"}}


def test_docker_compose_accepts_the_cluster_profile() -> None:
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("docker-compose is not installed (the Docker e2e test installs it)")
    result = subprocess.run(
        [compose, "--profile", "cluster", "config", "-q"],
        cwd=REPO, capture_output=True, text=True, check=False, timeout=60,
        env={**os.environ, **DOT_ENV},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
