"""Tests read the clock when they run, never when pytest collects them.

Everything a test module computes at import (module constants, ``parametrize`` arguments,
decorator and default-argument expressions) is computed at collection, which in a full run is
many minutes before the test itself runs. A token minted there with ``exp = now + 600`` has
expired by the time ``tests/integration/test_security.py`` sends it in a run that reaches that
module after ten minutes: its "bad name claim" case was answered 401 (expired) instead of 403,
and its "not yet valid" case was accepted when the module came ~600 s after collection.

Read from the source, like the layering rule: a call at import time to anything that reads the
wall or monotonic clock, directly or through functions of this checkout (``token()``,
``issue_token()``…), fails here with its place. Wrap such a value in a ``lambda`` (or build it in
a fixture) so that it is made when the test runs.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
NODE = ROOT / "node"

# What reads a clock by itself, as dotted names after the module's imports are resolved.
CLOCKS = frozenset(
    {
        "time.time",
        "time.time_ns",
        "time.monotonic",
        "time.monotonic_ns",
        "datetime.datetime.now",
        "datetime.datetime.utcnow",
        "datetime.datetime.today",
        "datetime.date.today",
    }
)


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    aliases: dict[str, str] = field(default_factory=dict)  # local name -> dotted name
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = field(default_factory=dict)


def module_name(path: Path) -> str:
    base = NODE if path.is_relative_to(NODE) else ROOT
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def load(path: Path) -> Module:
    return parse(module_name(path), path, path.read_text())


def parse(name: str, path: Path, source: str) -> Module:
    module = Module(name, path, ast.parse(source, str(path)))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for statement in module.tree.body:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
            module.functions[statement.name] = statement
            module.aliases[statement.name] = f"{name}.{statement.name}"
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                local = alias.asname or alias.name.partition(".")[0]
                module.aliases[local] = alias.name if alias.asname else local
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                module.aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
    return module


def dotted(expr: ast.expr, module: Module) -> str | None:
    """``time.time`` / ``token`` / ``dt.datetime.now`` as a dotted name through the imports."""
    if isinstance(expr, ast.Name):
        return module.aliases.get(expr.id, expr.id)
    if isinstance(expr, ast.Attribute):
        head = dotted(expr.value, module)
        return None if head is None else f"{head}.{expr.attr}"
    return None


def calls_in(node: ast.AST, *, into_deferred: bool) -> Iterator[ast.Call]:
    """Calls under ``node``; with ``into_deferred`` False, not those in a lambda or nested def,
    which run later, when called."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, ast.Call):
            yield current
        for child in ast.iter_child_nodes(current):
            deferred = isinstance(child, ast.Lambda | ast.FunctionDef | ast.AsyncFunctionDef)
            if into_deferred or not deferred:
                stack.append(child)


def clock_readers(modules: dict[str, Module]) -> set[str]:
    """Dotted names of the checkout's module-level functions that read a clock when called."""
    callees = {
        f"{module.name}.{fname}": {
            name
            for call in calls_in(function, into_deferred=True)
            if (name := dotted(call.func, module)) is not None
        }
        for module in modules.values()
        for fname, function in module.functions.items()
    }
    readers: set[str] = set(CLOCKS)
    changed = True
    while changed:  # to a fixed point: token() -> issue_token() -> time.time()
        changed = False
        for function, names in callees.items():
            if function not in readers and not names.isdisjoint(readers):
                readers.add(function)
                changed = True
    return readers


def import_time_expressions(body: list[ast.stmt]) -> Iterator[ast.AST]:
    """What runs when the module is imported: statements, class bodies, and of each function
    only its decorators and default arguments (its body runs when the test runs)."""
    for statement in body:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from statement.decorator_list
            yield from statement.args.defaults
            yield from (d for d in statement.args.kw_defaults if d is not None)
        elif isinstance(statement, ast.ClassDef):
            yield from statement.decorator_list
            yield from import_time_expressions(statement.body)
        elif isinstance(statement, ast.If) and _is_main_guard(statement.test):
            continue
        else:
            yield statement


def _is_main_guard(test: ast.expr) -> bool:
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
    )


def clock_reads_at_import(module: Module, readers: set[str]) -> Iterator[ast.Call]:
    for expression in import_time_expressions(module.tree.body):
        for call in calls_in(expression, into_deferred=False):
            if dotted(call.func, module) in readers:
                yield call


def checkout_modules() -> dict[str, Module]:
    paths = sorted(TESTS.rglob("*.py")) + sorted(NODE.rglob("*.py"))
    modules = (load(p) for p in paths if "artifacts" not in p.relative_to(ROOT).parts)
    return {m.name: m for m in modules}


def test_no_test_module_reads_the_clock_at_collection() -> None:
    modules = checkout_modules()
    readers = clock_readers(modules)
    assert "tests.integration.test_security.token" in readers  # the rule sees through helpers
    assert "roomcast.core.auth.issue_token" in readers
    found = sorted(
        f"{module.path.relative_to(ROOT)}:{call.lineno}: {ast.unparse(call.func)}() reads the "
        "clock at import: make the value in a lambda or a fixture, when the test runs"
        for module in modules.values()
        if module.path.is_relative_to(TESTS)
        for call in clock_reads_at_import(module, readers)
    )
    assert not found, "\n".join(found)


# The shape that made the handshake test flaky, and its fix: the rule must tell them apart.
MINTED_AT_COLLECTION = """
import time
import pytest
from roomcast.core.auth import issue_token

def token(**claims):
    now = int(time.time())
    return str(now)

@pytest.mark.parametrize("query", ["?token=" + token(name="<b>x</b>")])
def test_a(query): ...

@pytest.mark.parametrize("query", [lambda: "?token=" + token(name="<b>x</b>")])
def test_b(query): ...

STALE = issue_token("s", "u")
FRESH = lambda: issue_token("s", "u")

class TestC:
    late = time.monotonic()

    def test_d(self, started=time.time()):
        return token()
"""


def test_the_rule_flags_tokens_minted_at_collection_and_not_lambdas() -> None:
    example = parse("example", TESTS / "example.py", MINTED_AT_COLLECTION)
    auth = load(NODE / "roomcast" / "core" / "auth.py")
    readers = clock_readers({example.name: example, auth.name: auth})
    flagged = sorted(
        (call.lineno, ast.unparse(call.func)) for call in clock_reads_at_import(example, readers)
    )
    assert flagged == [
        (10, "token"),  # the handshake test's parametrize, as it was
        (16, "issue_token"),  # through another module's function
        (20, "time.monotonic"),  # a class body runs at import
        (22, "time.time"),  # so does a default argument
    ]
