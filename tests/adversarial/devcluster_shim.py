"""The ONE place this suite imports the project's dev-cluster helpers from.

``roomcast/devcluster.py`` is moving to ``roomcast_dev/devcluster.py`` (issue 13). The checkout's
own module is tried first (PYTHONPATH puts this worktree's ``node/`` ahead of the shared venv's
editable install, which may already hold the other layout), then the new place.
"""

from __future__ import annotations

import importlib
from pathlib import Path
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
ManagedProcess: Any = _module.ManagedProcess
REPO_ROOT: Path = _module.REPO_ROOT
free_port: Any = _module.free_port
find_binary: Any = _module.find_binary
timeout_factor: Any = _module.timeout_factor


def scaled(seconds: float) -> float:
    """Every wait of the suite, scaled by ROOMCAST_TEST_TIMEOUT_FACTOR."""
    return seconds * float(timeout_factor())
