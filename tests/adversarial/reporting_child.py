"""A helper process of the suite, run as ``python -m MODULE ARGS``: it prints one JSON line with
``"ready": true`` once it is in place, and its report, one JSON line, once it has read its stdin
to the end. The bystander probe and the reading room member are such processes."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.adversarial.devcluster_shim import REPO_ROOT, ClusterError


class ReportingChild:
    """The process, ready on return (its ready line in :attr:`ready`)."""

    def __init__(self, module: str, *args: str, what: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line or not json.loads(line).get("ready"):
            self.kill()
            raise ClusterError(f"{what}: {line!r}")
        self.ready: dict[str, Any] = json.loads(line)

    def report(self, given: str, timeout: float) -> dict[str, Any]:
        """Writes ``given`` to its stdin and closes it: the report it then prints."""
        try:
            out, _ = self.process.communicate(given, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return report

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
