"""The adversarial suite's own fixtures: a REAL cluster with the shipped DEFAULT limits (no test
relaxations: the attacks must meet what an operator deploys), and the bystander probe.

Every test here is marked ``adversarial`` (registered in pyproject.toml): ``pytest -m adversarial``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.adversarial.bystander import BystanderProbe
from tests.adversarial.devcluster_shim import LocalCluster

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(HERE):
            item.add_marker(pytest.mark.adversarial)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """redis + 3 nodes + nginx (the `make run` template), default limits, open mode."""
    with LocalCluster(3) as running:
        yield running


@pytest.fixture
def fresh_cluster() -> Iterator[Any]:
    """The same, of one's own: for attacks whose damage would leak into the next test."""
    with LocalCluster(3) as running:
        yield running


@pytest.fixture
def probe() -> BystanderProbe:
    return BystanderProbe()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    """One node checking ES256 tokens (the costliest signature to verify), and its private key."""
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_file = Path(tmp_path_factory.mktemp("es256")) / "public.pem"
    key_file.write_bytes(public)
    env = {"ROOMCAST_AUTH_PUBLIC_KEY_FILE": str(key_file)}
    with LocalCluster(1, nginx=False, node_env=env) as cluster:
        yield cluster.nodes[0], private
