"""Every test the pages name as the proof of a promise must be there: a test file named by path
(`tests/integration/test_recovery.py`) or by its name alone (`test_redis_sentinel.py`), and a
test named in it (`tests/integration/test_recovery.py::test_b_connection_dropped_...`). A
renamed or deleted test otherwise leaves a promise quoting a proof that no longer runs."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from tests.support.docs import PAGES
from tests.support.paths import REPO

TESTS = REPO / "tests"
# A test module by its path from the repository's root, or by its file name alone, and
# optionally one of its tests after `::`; or `::test_name` alone, a test of the module named
# last before it on the same line.
NAMED_TEST = re.compile(
    r"(?<![\w/])(?P<path>(?:tests/[\w/]+/)?test_\w+\.py)(?:::(?P<test>test_\w+))?"
    r"|(?<![\w.])::(?P<bare>test_\w+)"
)


@cache
def modules_called(name: str) -> tuple[Path, ...]:
    return tuple(sorted(TESTS.rglob(name)))


def resolve(path: str) -> tuple[Path, ...]:
    if not path:
        return ()
    if path.startswith("tests/"):
        module = REPO / path
        return (module,) if module.is_file() else ()
    return modules_called(path)


def defines(module: Path, test: str) -> bool:
    source = module.read_text(encoding="utf-8")
    return re.search(rf"^(?:async )?def {re.escape(test)}\(", source, re.M) is not None


def named_tests() -> list[tuple[str, str, str | None]]:
    """(page, module as written, test or None) for every test a page names."""
    found = []
    for page in PAGES:
        name = page.relative_to(REPO).as_posix()
        for line in page.read_text(encoding="utf-8").splitlines():
            module = ""  # a bare `::test_name` with no module before it names nothing
            for match in NAMED_TEST.finditer(line):
                if match["path"] is not None:
                    module = match["path"]
                    found.append((name, module, match["test"]))
                else:
                    found.append((name, module, match["bare"]))
    return found


def test_the_pages_name_tests() -> None:
    # The check below must have something to check: the guarantees page names dozens.
    assert len(named_tests()) > 50


def test_every_test_module_a_page_names_exists() -> None:
    missing = [
        f"{page}: {path or '(no module before it)'}::{test}"
        for page, path, test in named_tests()
        if not resolve(path)
    ]
    assert missing == []


def test_every_test_a_page_names_is_defined_in_its_module() -> None:
    missing = [
        f"{page}: {path}::{test}"
        for page, path, test in named_tests()
        if test is not None and not any(defines(module, test) for module in resolve(path))
    ]
    assert missing == []
