"""What the pages point a reader to must be there: the sections one file names in another, every
page from the home page, every verb in `make help`, and the same set-up promised by the README
and the quickstart, naming every Debian package the Makefile installs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support.docs import DOCS, PAGES
from tests.support.paths import REPO as ROOT

# Sections named across files ------------------------------------------------------------------

# A file, then the section meant: `README "Hooks"`, `docs/protocol.md ("A churning client")`,
# `(README, Hooks)`.
SECTION_REFERENCE = re.compile(
    r'(?<![\w/])`?(README(?:\.md)?|docs/[\w/-]+\.md)`?\)?,?\s\(?(?:"([^"\n]+)"|([A-Z][a-z]+)\))'
)
TEXT_SUFFIXES = {".py", ".md", ".yml", ".yaml", ".ts", ".js", ".mjs", ".conf", ".toml"}
NOT_OURS = {".git", ".venv", "node_modules", "site", "dist", "results", "artifacts", "__pycache__"}


def our_text_files() -> list[Path]:
    """The repository's code, configuration and documentation (not what tools made)."""
    return [
        path
        for path in sorted(ROOT.rglob("*"))
        if (path.suffix in TEXT_SUFFIXES or path.name in ("Makefile", ".env.example"))
        and not NOT_OURS & set(path.relative_to(ROOT).parts)
        and path.is_file()
    ]


def sections_of(page: Path) -> set[str]:
    """Headings, and the bold lead-ins of paragraphs and list items (`**Slow clients.**`)."""
    text = page.read_text(encoding="utf-8")
    headings = re.findall(r"^#+ (.+)$", text, re.M)
    leads = re.findall(r"^(?:- |\| )?\*\*([^*]+?)\.?\*\*", text, re.M)
    return {name.strip() for name in headings + leads}


def test_every_section_a_file_points_to_exists() -> None:
    broken = []
    for path in our_text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in SECTION_REFERENCE.finditer(text):
            target, quoted, bare = match.groups()
            page = ROOT / ("README.md" if target.startswith("README") else target)
            if (quoted or bare) not in sections_of(page):
                broken.append(f"{path.relative_to(ROOT)}: {match.group(0)}")
    assert broken == []


# The two first commands -----------------------------------------------------------------------


def setup_paragraph(page: Path) -> str:
    text = page.read_text(encoding="utf-8")
    match = re.search(r"^Both commands do all set-up.*?(?=\n\n)", text, re.M | re.S)
    assert match is not None, page
    return " ".join(match.group(0).split())


def make_installs() -> set[str]:
    """Every Debian package the Makefile's targets may install."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    packages = set(re.findall(r'missing="\$\$missing ([\w.-]+)"', makefile))
    for line in re.findall(r"apt-get install -y -qq --no-install-recommends ([^;\n]+)", makefile):
        packages |= {word for word in line.split() if not word.startswith("$")}
    return packages


def test_the_quickstart_and_the_readme_promise_the_same_set_up() -> None:
    assert setup_paragraph(DOCS / "quickstart.md") == setup_paragraph(ROOT / "README.md")


def test_the_set_up_names_every_debian_package_the_makefile_installs() -> None:
    promised = set(re.findall(r"`([\w.-]+)`", setup_paragraph(ROOT / "README.md")))
    assert make_installs() <= promised


def test_make_help_lists_every_verb_the_pages_name() -> None:
    listed = subprocess.run(
        ["make", "-s", "--no-print-directory", "help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    verbs = set(re.findall(r"^  make ([\w-]+) ", listed, re.M))
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, re.M))
    named = {
        verb
        for page in [*PAGES, ROOT / "bench" / "README.md", ROOT / "tests" / "chaos" / "README.md"]
        for verb in re.findall(r"`make ([a-z][\w-]*)", page.read_text(encoding="utf-8"))
    }
    assert named and named <= targets, named - targets
    assert named <= verbs, named - verbs


def test_the_home_page_points_to_every_page() -> None:
    linked = set(
        re.findall(r"\]\(([\w/-]+\.md)\)", (DOCS / "index.md").read_text(encoding="utf-8"))
    )
    pages = {str(page.relative_to(DOCS)) for page in DOCS.rglob("*.md")} - {"index.md"}
    assert pages - linked == set()
