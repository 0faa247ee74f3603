"""Deployment tests: Kubernetes manifests, compose file, nginx configs, observability (offline),
and the Docker end-to-end test (`make test-docker`).

The end-to-end test starts a Docker engine and builds images for minutes, so a plain `pytest`
(`make test`) deselects it, saying so; it runs when its file is named on the command line or with
ROOMCAST_DOCKER_E2E=1 (`make test-docker` does both).
"""

from __future__ import annotations

import os

import pytest

E2E_FILE = "test_docker_e2e.py"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "docker_e2e: starts a Docker engine and the compose stack (make test-docker)"
    )


def _e2e_requested(config: pytest.Config) -> bool:
    if os.environ.get("ROOMCAST_DOCKER_E2E") == "1":
        return True
    return any(E2E_FILE in str(arg) for arg in config.args)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _e2e_requested(config):
        return
    e2e = [item for item in items if item.get_closest_marker("docker_e2e") is not None]
    if not e2e:
        return
    items[:] = [item for item in items if item.get_closest_marker("docker_e2e") is None]
    config.hook.pytest_deselected(items=e2e)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"tests/deploy: deselected {len(e2e)} Docker end-to-end tests "
            "(run them with `make test-docker`)"
        )
