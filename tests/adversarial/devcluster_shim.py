"""The ONE place this suite imports the project's dev-cluster helpers from.

``roomcast/devcluster.py`` is moving to ``roomcast_dev/devcluster.py`` (issue 13); whichever
exists is used, so the attack suite keeps running across the move without edits.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


def _devcluster() -> ModuleType:
    for name in ("roomcast.devcluster", "roomcast_dev.devcluster"):
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError:
            continue
    raise ModuleNotFoundError("neither roomcast_dev.devcluster nor roomcast.devcluster")


_module = _devcluster()

LocalCluster: Any = _module.LocalCluster
ClusterError: type[Exception] = _module.ClusterError
REPO_ROOT: Any = _module.REPO_ROOT
free_port: Any = _module.free_port
find_binary: Any = _module.find_binary
timeout_factor: Any = _module.timeout_factor


def scaled(seconds: float) -> float:
    """Every wait of the suite, scaled by ROOMCAST_TEST_TIMEOUT_FACTOR."""
    return seconds * float(timeout_factor())
