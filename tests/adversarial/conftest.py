"""The adversarial suite's own fixtures: a REAL cluster with the shipped DEFAULT limits (no test
relaxations: the attacks must meet what an operator deploys), and the bystander probe.

Every test here is marked ``adversarial`` (registered in pyproject.toml): ``pytest -m adversarial``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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
