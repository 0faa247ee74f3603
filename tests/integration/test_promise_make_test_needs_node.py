"""The README: `make test` does not install Node.js 20 or later with npm (for the JavaScript
client); "it stops before anything runs, saying so, when they are missing". Tried with the real
Makefile and make: the JavaScript set-up step run with no Node.js at all, then with a Node.js
18 (Debian 12's), on a PATH that holds nothing else of them. The step must fail with its
message and never reach `npm ci`; and `make test` must have it among the prerequisites it
builds before its first command (pytest)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support.paths import REPO

pytestmark = pytest.mark.integration

STAMP = "clients/js/node_modules/.installed"
MESSAGE = "Node.js >= 20 and npm are needed"


def executable(path: Path, script: str) -> None:
    path.write_text("#!/bin/sh\n" + script, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def js_set_up(bin_dir: Path) -> subprocess.CompletedProcess[str]:
    """The JavaScript set-up step, forced (-B: even where it ran before), with only
    ``bin_dir`` on the PATH."""
    make = shutil.which("make")
    assert make is not None
    env = {"PATH": str(bin_dir), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [make, "-B", "-C", str(REPO), STAMP],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def fake_npm(bin_dir: Path) -> Path:
    """An npm that only records that it was called (it must not be)."""
    calls = bin_dir / "npm-calls"
    executable(bin_dir / "npm", f'echo "$@" >> {calls}\n')
    return calls


def test_without_node_the_set_up_stops_saying_so(tmp_path: Path) -> None:
    calls = fake_npm(tmp_path)
    result = js_set_up(tmp_path)
    assert result.returncode != 0, result.stdout
    assert MESSAGE in result.stdout + result.stderr, result.stdout + result.stderr
    assert "found: none" in result.stdout
    assert not calls.exists()


def test_with_node_18_the_set_up_stops_saying_so(tmp_path: Path) -> None:
    calls = fake_npm(tmp_path)
    # Debian 12's node: the Makefile's check (`node -e ...`) fails, `node --version` says 18.
    executable(
        tmp_path / "node",
        'if [ "$1" = "--version" ]; then echo v18.19.0; exit 0; fi\nexit 1\n',
    )
    result = js_set_up(tmp_path)
    assert result.returncode != 0, result.stdout
    assert f"{MESSAGE} (found: v18.19.0)" in result.stdout, result.stdout + result.stderr
    assert not calls.exists()


def test_make_test_checks_before_its_first_command() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    match = re.search(r"^test:([^#\n]*)", makefile, re.M)
    assert match is not None
    assert "js-deps" in match.group(1).split()
