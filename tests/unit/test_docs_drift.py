"""What the prose of the documentation names must exist: the metrics a node exports, the
sections one file points another to, the objects `kubectl apply -f k8s/` prints, the HTTP
endpoints, the Debian packages the two first commands install. (Tables that can be generated
are: node/roomcast_dev/docsite.py; code samples are checked by test_docs_samples.py.)"""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from roomcast.runtime.config import Settings, env_name
from roomcast.runtime.metrics import Metrics
from roomcast.wire.openapi import document

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted([*DOCS.rglob("*.md"), ROOT / "README.md"])


def section(page: Path, heading: str) -> str:
    """The text under ``## heading`` up to the next heading of that level or higher."""
    text = page.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^#{{1,2}} |\Z)", text, re.M | re.S)
    assert match is not None, f"no '## {heading}' in {page}"
    return match.group(1)


# Metrics ------------------------------------------------------------------------------------


def exported_metrics() -> dict[str, set[str]]:
    """Each metric a node exports, as a query names it, with its label names."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.watch_redis_broker(lambda: {"x": 1}, lambda: {"x": 1})
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase) and value._labelnames:
            value.labels(*["x"] * len(value._labelnames))  # a child, so its labels are shown
    exported = {}
    for family in registry.collect():
        suffix = "_total" if family.type == "counter" else ""
        labels = {label for sample in family.samples for label in sample.labels if label != "le"}
        exported[family.name + suffix] = labels
    return exported


DOCUMENTED_METRIC = re.compile(r"`(roomcast_[a-z0-9_]+)(?:\{([a-z_, ]+)[}=][^`]*)?`")


def test_the_metrics_list_names_every_metric_with_its_labels() -> None:
    listed = {
        name: {label.strip() for label in labels.split(",")} if labels else set()
        for name, labels in DOCUMENTED_METRIC.findall(section(DOCS / "operations.md", "Metrics"))
    }
    assert listed == exported_metrics()


def test_every_metric_the_pages_name_is_exported() -> None:
    exported = set(exported_metrics())
    series = {f"{name}_{part}" for name in exported for part in ("bucket", "sum", "count")}
    unknown = {
        f"{page.relative_to(ROOT)}: {name}"
        for page in PAGES
        for name, _ in DOCUMENTED_METRIC.findall(page.read_text(encoding="utf-8"))
        if name not in exported | series
    }
    assert unknown == set()


# Defaults quoted in the prose ----------------------------------------------------------------

# A setting, then its value: "`ROOMCAST_DRAIN_TIMEOUT`, 10 s", "`ROOMCAST_HISTORY_BYTES` (2 MiB".
QUOTED_DEFAULT = re.compile(
    r"`(ROOMCAST_[A-Z_]+)`(?:,| \() ?(\d[\d,]*(?:\.\d+)?)(?: (s|ms|KiB|MiB|GiB)\b)?"
)
UNITS = {"s": 1.0, "ms": 0.001, "KiB": 2.0**10, "MiB": 2.0**20, "GiB": 2.0**30, None: 1.0}


def test_every_default_the_prose_quotes_is_the_settings() -> None:
    defaults = {env_name(f.name): f.default for f in dataclasses.fields(Settings)}
    quoted = [
        (page, match)
        for page in PAGES
        for match in QUOTED_DEFAULT.finditer(page.read_text(encoding="utf-8"))
    ]
    wrong = [
        f"{page.relative_to(ROOT)}: {match.group(0)} (the default: {defaults.get(match[1])})"
        for page, match in quoted
        if float(match[2].replace(",", "")) * UNITS[match[3]] != defaults.get(match[1])
    ]
    assert quoted and wrong == []


# "| … `ROOMCAST_X_PER_SECOND`/`_BURST` | 1.5 MiB/s, 3 MiB |" or "| … `ROOMCAST_X` | 64 KiB (…) |"
LIMIT_ROW = re.compile(
    r"^\|[^|]*`(ROOMCAST_[A-Z_]+?)(_PER_SECOND)?`(?:/`_BURST`)?([^|]*)\| ([^|]+)\|", re.M
)
VALUE = re.compile(r"^(\d[\d,]*(?:\.\d+)?) ?(KiB|MiB|GiB|s)?(/s)?$")


def quoted_value(text: str) -> float | None:
    match = VALUE.match(text.strip())
    if match is None:
        return None
    return float(match[1].replace(",", "")) * UNITS[match[2]]


def test_every_default_the_limit_tables_give_is_the_settings() -> None:
    defaults = {env_name(f.name): f.default for f in dataclasses.fields(Settings)}
    checked, wrong = 0, []
    for page in PAGES:
        for name, per_second, after, cell in LIMIT_ROW.findall(page.read_text(encoding="utf-8")):
            if after.startswith(" /"):
                continue  # a share of the setting: `ROOMCAST_HOOK_MAX_CONCURRENCY` / 8
            head = re.split(r" \(|, (?:over|each|per|a )", cell)[0]
            values = [quoted_value(part) for part in head.split(", ")]
            if name + per_second not in defaults or None in values:
                continue  # a default said in words
            expected = [defaults[name + per_second]]
            if per_second:  # and the burst: ROOMCAST_X_RATE_BURST, or ROOMCAST_X_BURST
                bursts = (f"{name}_BURST", name.removesuffix("_RATE") + "_BURST")
                expected.append(next(defaults[n] for n in bursts if n in defaults))
            checked += 1
            if values != expected:
                wrong.append(f"{page.relative_to(ROOT)}: {name}{per_second} | {cell.strip()}")
    assert checked >= 15 and wrong == []


# Sections named across files ------------------------------------------------------------------

# A file, then the section meant: `README "Hooks"`, `docs/protocol.md ("A churning room")`,
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


# Kubernetes -----------------------------------------------------------------------------------

KIND_PLURAL = {
    "Namespace": "namespace",
    "Deployment": "deployment.apps",
    "Service": "service",
    "Secret": "secret",
    "ConfigMap": "configmap",
    "NetworkPolicy": "networkpolicy.networking.k8s.io",
    "PodDisruptionBudget": "poddisruptionbudget.policy",
    "HorizontalPodAutoscaler": "horizontalpodautoscaler.autoscaling",
}


def test_the_printed_kubectl_apply_lists_every_object_of_k8s_in_order() -> None:
    expected = [
        f"{KIND_PLURAL[item['kind']]}/{item['metadata']['name']} created"
        for manifest in sorted((ROOT / "k8s").glob("*.yaml"))
        for item in yaml.safe_load_all(manifest.read_text(encoding="utf-8"))
        if item
    ]
    text = section(DOCS / "operations.md", "Kubernetes")
    printed = re.search(r"kubectl apply -f k8s/.*?```text\n(.*?)```", text, re.S)
    assert printed is not None
    assert printed.group(1).splitlines() == expected


def test_every_secret_the_pages_name_is_shipped() -> None:
    shipped = {
        item["metadata"]["name"]
        for manifest in (ROOT / "k8s").glob("*.yaml")
        for item in yaml.safe_load_all(manifest.read_text(encoding="utf-8"))
        if item and item["kind"] == "Secret"
    }
    named = set()
    for page in [*PAGES, ROOT / "k8s" / "README.md"]:
        text = page.read_text(encoding="utf-8")
        named |= set(re.findall(r"[Ss]ecret `([\w-]+)`|`([\w-]+)` Secret", text))
    assert {name for pair in named for name in pair if name} <= shipped


# nginx ----------------------------------------------------------------------------------------

NGINX_CONFIGS = (
    ROOT / "loadbalancer" / "nginx.conf.template",
    ROOT / "loadbalancer/docker/nginx.conf",
)


def nginx_statements() -> dict[str, list[set[str]]]:
    """Each directive of the shipped nginx configurations, with the arguments of each use."""
    found: dict[str, list[set[str]]] = {}
    for config in NGINX_CONFIGS:
        for directive, arguments in re.findall(
            r"^\s*([a-z_]+)\s+([^;{#\n]*);", config.read_text(encoding="utf-8"), re.M
        ):
            found.setdefault(directive, []).append(set(arguments.split()))
    return found


def test_every_nginx_directive_the_pages_quote_is_shipped_so() -> None:
    shipped = nginx_statements()
    directive = "|".join(sorted(shipped))
    wrong = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        # `proxy_connect_timeout 1s`, `lingering_close always; lingering_time 2s`
        for quoted in re.findall(rf"`((?:{directive}) [^`]+)`", text):
            for statement in filter(None, (part.strip() for part in quoted.split(";"))):
                name, *arguments = statement.split()
                wanted = set(arguments) - {"…"}
                if not any(wanted <= used for used in shipped.get(name, [])):
                    wrong.append(f"{page.relative_to(ROOT)}: `{statement}`")
        # the 2 s `proxy_connect_timeout`
        for seconds, name in re.findall(rf"(\d+) s `({directive})`", text):
            if not any(f"{seconds}s" in used for used in shipped[name]):
                wrong.append(f"{page.relative_to(ROOT)}: {seconds} s `{name}`")
    assert wrong == []


# HTTP API -------------------------------------------------------------------------------------


def test_every_endpoint_the_pages_name_is_in_the_openapi_document() -> None:
    operations = {
        (method.upper(), path)
        for path, methods in document()["paths"].items()
        for method in methods
    }
    named = {
        (method, path.split("?", 1)[0])
        for page in PAGES
        for method, path in re.findall(
            r"`(GET|POST|PUT|DELETE|PATCH) (/api/[^`\s]*)", page.read_text(encoding="utf-8")
        )
    }
    assert named and named <= operations, named - operations


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
