"""The previous release's node (``ce72fca``, before user ids), exported from git, and nodes of it
started beside this release's: what rolling-upgrade tests mix on one Redis."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from roomcast_dev.devcluster import LocalCluster, NodeProcess

from tests.support.paths import REPO

# The release before user ids, join/leave causes and heartbeats on Redis's clock.
PREVIOUS_RELEASE = "ce72fca"


def export_previous_release(into: Path) -> Path:
    """``node/`` of the previous release under ``into``: nodes started with it on their
    PYTHONPATH run that code. Skips in a checkout without git history (a shallow clone, an
    export), fails when the history lacks the release."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", PREVIOUS_RELEASE, "node"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        shallow = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--is-shallow-repository"],
            capture_output=True,
            text=True,
            check=False,
        )
        if shallow.returncode != 0 or shallow.stdout.strip() == "true":
            # A shallow clone or an export holds no earlier release to upgrade from.
            pytest.skip(f"no git history here to take the previous release {PREVIOUS_RELEASE}")
        pytest.fail(f"the previous release {PREVIOUS_RELEASE} is not in this checkout's history")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "node"


def start_old(cluster: LocalCluster, source: Path, port: int = 0) -> NodeProcess:
    """A node of the previous release (``source``: its exported ``node/``) in ``cluster``."""
    extra = {"PYTHONPATH": str(source)}
    if port:
        extra["ROOMCAST_PORT"] = str(port)
    return cluster.start_node(extra)
