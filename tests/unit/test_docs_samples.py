"""Every code sample of the documentation (docs/ and README.md) is checked, so none can rot.

- ``python``: type-checked with ``mypy --strict`` against the checkout, then imported;
- ``sh``: every ``make`` target named exists in the Makefile, every ``.venv/bin`` program is one
  the project installs (the quickstart's commands also run against a real cluster:
  tests/integration/test_docs_quickstart.py);
- ``ts``: type-checked by ``tsc`` against the package in clients/js (``npm run typecheck``);
- ``text``: output and pictures, not code. Any other language (or none) fails here.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([*ROOT.joinpath("docs").rglob("*.md"), ROOT / "README.md"])
FENCE = re.compile(r"^```(\S*)\n(.*?)^```$", re.M | re.S)
CHECKED = {"python", "sh", "ts", "text"}
REPO_PATH = re.compile(r"(?:^|\s)((?:bench|k8s|loadbalancer|clients|node)/[\w./-]+)")


def samples(language: str) -> list[tuple[str, str]]:
    """(where, code) of every block in ``language``."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            if match.group(1) == language:
                line = text[: match.start()].count("\n") + 1
                found.append((f"{page.relative_to(ROOT)}:{line}", match.group(2)))
    return found


def test_every_block_names_a_checked_language() -> None:
    unchecked = [
        f"{page.relative_to(ROOT)}: ```{match.group(1)}"
        for page in PAGES
        for match in FENCE.finditer(page.read_text(encoding="utf-8"))
        if match.group(1) not in CHECKED
    ]
    assert unchecked == []
    assert samples("python") and samples("sh") and samples("ts")


def test_python_samples_type_check_and_import(tmp_path: Path) -> None:
    files = []
    for index, (where, code) in enumerate(samples("python")):
        path = tmp_path / f"sample_{index}.py"
        path.write_text(f"# {where}\n{code}", encoding="utf-8")
        files.append(path)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", *map(str, files)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for path in files:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


def _make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w-]*):", makefile, re.M))


def _scripts() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return set(project["project"]["scripts"]) | {"python", "mkdocs"}


@pytest.mark.parametrize(("where", "code"), samples("sh"), ids=lambda v: str(v)[:60])
def test_shell_samples_name_real_targets_and_programs(where: str, code: str) -> None:
    targets, scripts = _make_targets(), _scripts()
    for line in code.splitlines():
        command = line.split("#", 1)[0].strip()
        for target in re.findall(r"(?:^|&&\s*)make ([\w-]+)", command):
            assert target in targets, f"{where}: no make target {target!r}"
        for program in re.findall(r"\.venv/bin/([\w-]+)", command):
            assert program in scripts, f"{where}: .venv/bin/{program} is not installed"
        for path in re.findall(REPO_PATH, command):
            assert (ROOT / path).exists(), f"{where}: {path} does not exist"
