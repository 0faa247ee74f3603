"""The documentation's pages, for tests that hold them to the code."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.paths import REPO

DOCS = REPO / "docs"
PAGES = sorted([*DOCS.rglob("*.md"), REPO / "README.md"])


def section(page: Path, heading: str) -> str:
    """The text under ``## heading`` up to the next heading of that level or higher."""
    text = page.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^#{{1,2}} |\Z)", text, re.M | re.S)
    assert match is not None, f"no '## {heading}' in {page}"
    return match.group(1)
