"""What the documentation's prose says of the node must be what the node does: the metrics it
exports, the defaults of its settings, its HTTP endpoints, error codes and frames. (Tables that
can be generated are: node/roomcast_dev/docsite.py; code samples are checked by
test_docs_samples.py; references between pages: test_docs_references.py; the clients:
test_docs_clients.py; the hooks' JSON: test_docs_hooks.py; the deployment files:
tests/deploy/test_docs_deploy.py.)"""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase
from roomcast_dev.docsite import ERROR_MEANINGS

from roomcast.runtime.config import Settings, env_name, env_names
from roomcast.runtime.metrics import Metrics
from roomcast.wire import protocol
from roomcast.wire.codes import ErrorCode
from roomcast.wire.openapi import document
from roomcast.wire.protocol import COMMAND_TYPES
from tests.support.docs import DOCS, PAGES, section
from tests.support.paths import REPO as ROOT

# Metrics ------------------------------------------------------------------------------------


def exported_metrics() -> dict[str, set[str]]:
    """Each metric a node exports, as a query names it, with its label names."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.watch_redis_broker(lambda: {"x": 1}, lambda: {"x": 1}, lambda: {"x": 1})
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


# Variables ------------------------------------------------------------------------------------

READ_FROM_THE_ENVIRONMENT = re.compile(
    r"""(?:environ(?:\.get)?\(|environ\[|getenv\(|process\.env\.)["']?(ROOMCAST_\w+)"""
)


def variables_anything_reads() -> set[str]:
    """The node's settings, the variables of the compose files, and what the checkout's code
    (the CLI, the launchers, the tests) reads from the environment."""
    known = set(env_names())
    for path in [*ROOT.glob("*.yml"), *(ROOT / "observability").glob("*.yml")]:
        known |= set(re.findall(r"\$\{(ROOMCAST_\w+)", path.read_text(encoding="utf-8")))
    for folder in ("node", "tests", "bench", "clients/js/scripts", "clients/js/test"):
        for path in (ROOT / folder).rglob("*.*"):
            if path.suffix in (".py", ".mjs", ".ts") and "node_modules" not in path.parts:
                text = path.read_text(encoding="utf-8")
                known |= set(READ_FROM_THE_ENVIRONMENT.findall(text))
    return known


def test_every_roomcast_variable_the_pages_name_is_read_by_something() -> None:
    known = variables_anything_reads()
    example_backend = (ROOT / "examples" / "chat_backend" / "config.py").read_text("utf-8")
    unknown = set()
    for page in [*PAGES, ROOT / "k8s" / "README.md", ROOT / ".env.example"]:
        for name in re.findall(
            r"(?<!\w)(ROOMCAST_[A-Z0-9_]*[A-Z0-9])(_?)", page.read_text("utf-8")
        ):
            full, prefix = name[0], name[1] == "_"  # ROOMCAST_CLIENT_JOIN_RATE_*: a family
            if prefix and any(k.startswith(f"{full}_") for k in known):
                continue
            if full in known or f"CHAT_BACKEND_{full}" in example_backend:
                continue
            unknown.add(f"{page.relative_to(ROOT)}: {full}")
    assert unknown == set()


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


# Error codes ----------------------------------------------------------------------------------

# Where a code is given: the position of ``code`` in each constructor of an error answer.
CODE_ARGUMENT = {"ApiError": 1, "AuthError": 1, "ProtocolError": 0, "error": 0}


def codes_written_out(tree: ast.AST) -> set[str]:
    """The codes a module spells as strings: in an error's constructor, or a ``"code"`` key."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            owner = getattr(getattr(node.func, "value", None), "id", "protocol")
            position = CODE_ARGUMENT.get(str(name))
            if name == "error" and owner != "protocol":
                position = None  # log.error(...), not error(...) or protocol.error(...)
            given = [k.value for k in node.keywords if k.arg == "code"]
            if position is not None and len(node.args) > position:
                given.append(node.args[position])
            found |= {g.value for g in given if isinstance(g, ast.Constant)}
        elif isinstance(node, ast.Dict):
            found |= {
                value.value
                for key, value in zip(node.keys, node.values, strict=True)
                if isinstance(key, ast.Constant) and key.value == "code"
                if isinstance(value, ast.Constant)
            }
    return {code for code in found if isinstance(code, str)}


def test_every_code_the_node_or_nginx_answers_is_in_the_error_codes_table() -> None:
    # The table (docs/protocol.md) is generated from ErrorCode and says it lists every code
    # an error frame, a refused handshake or an HTTP API error carries; a code spelled out
    # anywhere else is missing from it (and from the JavaScript client's ErrorCode).
    sent = {
        f"{path.relative_to(ROOT)}: {code}"
        for path in sorted((ROOT / "node" / "roomcast").rglob("*.py"))
        for code in codes_written_out(ast.parse(path.read_text(encoding="utf-8")))
    }
    for config in ("loadbalancer/nginx.conf.template", "loadbalancer/docker/nginx.conf"):
        text = (ROOT / config).read_text(encoding="utf-8")
        sent |= {f"{config}: {code}" for code in re.findall(r'\\?"code\\?":\s*\\?"(\w+)', text)}
    assert sent
    unknown = {where for where in sent if where.rsplit(": ", 1)[1] not in set(ErrorCode)}
    assert unknown == set()


def test_the_error_codes_table_says_which_codes_nginx_answers_and_with_what_status() -> None:
    # A client of the HTTP API meets nginx's answers too (the other two configurations are the
    # same directive by directive: tests/deploy); a reader of the table must not take one for
    # the node's own meaning only: nginx's 504 `unconfirmed` says a request may have been done.
    text = (ROOT / "loadbalancer" / "nginx.conf.template").read_text(encoding="utf-8")
    answered = set(re.findall(r"return (\d{3}) '\{\"code\":\"(\w+)", text))
    assert len(answered) >= 4, answered
    untold = {
        f"{status} {code}"
        for status, code in answered
        if status not in ERROR_MEANINGS[code.upper()] or "nginx" not in ERROR_MEANINGS[code.upper()]
    }
    assert untold == set()


# Frames ---------------------------------------------------------------------------------------


def event_types_built(paths: list[Path]) -> set[str]:
    """The ``"type"`` of every event these modules build as a dict."""
    return {
        str(value.value)
        for path in paths
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Dict)
        for key, value in zip(node.keys, node.values, strict=True)
        if isinstance(key, ast.Constant) and key.value == "type"
        if isinstance(value, ast.Constant)
    }


def test_the_protocol_page_lists_every_frame_each_way() -> None:
    page = (DOCS / "protocol.md").read_text(encoding="utf-8")
    to_server = section(DOCS / "protocol.md", "Client → server")
    to_client = page[page.index("## Server → client") : page.index("## Big rooms")]
    documented = re.compile(r'\{"type":"([a-z_]+)"')
    assert set(documented.findall(to_server)) == set(COMMAND_TYPES)
    # Events are built in the wire format, the network layer and the chat logic (the client
    # library's frames and the nodes' control orders are not sent to clients).
    node = ROOT / "node" / "roomcast"
    built = [
        node / "wire" / "protocol.py",
        *(node / "net").glob("*.py"),
        *(node / "core").glob("*.py"),
    ]
    assert set(documented.findall(to_client)) == event_types_built(built)


def fields_built(paths: list[Path]) -> dict[str, set[str]]:
    """Each field the functions of these modules that build an event put in it, by the event's
    ``"type"``: the keys of the dict that names the type, and the keys its function assigns."""
    fields: dict[str, set[str]] = {}
    for path in paths:
        for function in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            types: set[str] = set()
            keys: set[str] = set()
            for node in ast.walk(function):
                if isinstance(node, ast.Dict):
                    constant = {
                        key.value: value
                        for key, value in zip(node.keys, node.values, strict=True)
                        if isinstance(key, ast.Constant) and isinstance(key.value, str)
                    }
                    named_type = constant.get("type")
                    if isinstance(named_type, ast.Constant) and isinstance(named_type.value, str):
                        types.add(named_type.value)
                        keys |= set(constant)
                elif isinstance(node, ast.Assign):
                    keys |= {
                        target.slice.value
                        for target in node.targets
                        if isinstance(target, ast.Subscript)
                        if isinstance(target.slice, ast.Constant)
                        if isinstance(target.slice.value, str)
                    }
            for kind in types:
                fields.setdefault(kind, set()).update(keys)
    return fields


def test_the_protocol_page_names_every_field_the_node_sends() -> None:
    # A field the node adds to an event (`"already":true` in the answer to a join of a room the
    # connection is in) and the page never names is one a client cannot know it may get.
    page = (DOCS / "protocol.md").read_text(encoding="utf-8")
    to_client = page[page.index("## Server → client") : page.index("## Big rooms")]
    named = set(re.findall(r'"([a-z_]+)"', to_client))
    node = ROOT / "node" / "roomcast"
    built = [
        node / "wire" / "protocol.py",
        *(node / "net").glob("*.py"),
        *(node / "core").glob("*.py"),
    ]
    unnamed = {
        f"{kind}: {field}"
        for kind, fields in fields_built(built).items()
        for field in fields - named
    }
    assert unnamed == set()


def test_the_openapi_message_names_every_field_a_message_carries() -> None:
    # History answers and event streams carry the messages as the node wrote them: with the
    # author's user_id, and the publish hook's message_id in rooms that have one.
    prefix = protocol.chat_message_prefix("r", "ann", "hi", 1, message_id="m1", user_id="u1")
    message = orjson.loads(protocol.complete_message(prefix, 1, "e1"))
    schema = document()["components"]["schemas"]["Message"]
    assert set(message) == set(schema["properties"])
    assert set(schema["required"]) < set(message)


def test_the_openapi_document_gives_every_change_nginx_may_leave_unconfirmed_a_504() -> None:
    # nginx answers 504 `unconfirmed` for a request that changes something when the node that
    # took it never answered (loadbalancer/nginx.conf.template); only GET and HEAD get 503.
    without = {
        f"{method.upper()} {path}"
        for path, methods in document()["paths"].items()
        for method, operation in methods.items()
        if method not in ("get", "head") and "504" not in operation["responses"]
    }
    assert without == set()


def test_the_operations_page_shows_the_listening_line_with_the_fields_a_node_logs() -> None:
    # The compose walk-through quotes a node's start-up log; its "listening" line is what an
    # operator greps for, so it shows every field the node puts there.
    page = (DOCS / "operations.md").read_text(encoding="utf-8")
    line = next(line for line in page.splitlines() if '"event":"listening"' in line)
    shown = set(orjson.loads(line[line.index("{") :])) - {"ts", "level", "logger", "node", "event"}
    app = ast.parse((ROOT / "node" / "roomcast" / "app.py").read_text(encoding="utf-8"))
    logged = {
        key.value
        for call in ast.walk(app)
        if isinstance(call, ast.Call) and call.args
        if isinstance(call.args[0], ast.Constant) and call.args[0].value == "listening"
        for keyword in call.keywords
        if keyword.arg == "extra" and isinstance(keyword.value, ast.Dict)
        for key in keyword.value.keys
        if isinstance(key, ast.Constant)
    }
    assert logged
    assert shown == logged
