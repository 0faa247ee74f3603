"""The server's import rule, read from the source: layers import downwards only, and nothing cycles.

Every ``import`` counts, those under ``if TYPE_CHECKING:`` and inside functions included: a
type-only edge is still a dependency a reader must hold in mind, and a lazy import only hides one.

    wire      pure formats and constants shared with the client (no I/O)
    runtime   process facilities: settings, metrics, logs, the collector's tuning
    broker    the broker port (``roomcast.broker``) and its adapters beside it
    core      chat logic on the event loop; sees the broker only through the port
    net       the asyncio protocols: the only code that writes to client sockets
    app, cli  the composition root and the command line: may import anything

``roomcast.client`` (and ``roomcast.chat_cli`` on top of it) and ``roomcast.admin`` (the server
API's wrapper) import only ``wire`` and themselves, so the client libraries never drag the server
in. ``roomcast_dev`` (local clusters for make run,
the tests and the benchmark) may use the server; the server never imports it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

NODE = Path(__file__).resolve().parents[2] / "node"
LAYERS = ("wire", "runtime", "broker", "core", "net")
ROOTS = frozenset({"roomcast.app", "roomcast.cli", "roomcast.__main__"})
BROKER_PORT = "roomcast.broker"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(NODE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(NODE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """First-party modules imported anywhere in the file (a module, never a name in one)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from roomcast.wire import protocol` imports a module; `from m import name`, m.
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        for target in targets:
            if target.split(".")[0] in {"roomcast", "roomcast_dev"} and target != name:
                yield target


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    return {name: set(imports_of(name, path, known)) for name, path in modules.items()}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "roomcast_dev":
        return "dev"
    if module in ROOTS:
        return "root"
    if len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    if len(parts) > 1 and parts[1] in {"client", "chat_cli", "admin"}:
        return "client"
    return None  # the bare package: roomcast/__init__ (its version string)


def allowed(source: str, target: str) -> bool:
    src, dst = layer_of(source), layer_of(target)
    if dst == "dev":
        return src == "dev"
    if src in {"dev", "root"} or dst is None:
        return True
    if src == "client":
        return dst in {"client", "wire"}
    if src is None or dst in {"root", "client"}:
        return False
    assert dst is not None
    if LAYERS.index(dst) > LAYERS.index(src):
        return False
    # Above the broker, only the composition root may name an adapter.
    return not (dst == "broker" and src != "broker" and target != BROKER_PORT)


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in graph() if m != "roomcast" and layer_of(m) is None]
    assert unplaced == [], f"modules outside every layer: {unplaced}"


def test_imports_point_down_only() -> None:
    against = sorted(
        f"{source} -> {target}"
        for source, targets in graph().items()
        for target in targets
        if not allowed(source, target)
    )
    assert against == [], "imports against the layer rule:\n" + "\n".join(against)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_cycles() -> None:
    edges = graph()
    # A package's __init__ importing its own submodules to re-export them is not a cycle of design.
    for name in edges:
        edges[name] = {t for t in edges[name] if not t.startswith(name + ".")}
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize(
    ("source", "target", "ok"),
    [
        ("roomcast.core.node", "roomcast.net.transport", False),
        ("roomcast.core.node", "roomcast.broker", True),
        ("roomcast.core.node", "roomcast.broker.redis", False),
        ("roomcast.wire.protocol", "roomcast.runtime.config", False),
        ("roomcast.client.core", "roomcast.core.node", False),
        ("roomcast.client.core", "roomcast.wire.protocol", True),
        ("roomcast.net.transport", "roomcast.roomcast_dev", True),
        ("roomcast.net.transport", "roomcast_dev.devcluster", False),
        ("roomcast.app", "roomcast.broker.redis", True),
    ],
)
def test_the_rule_itself(source: str, target: str, ok: bool) -> None:
    assert allowed(source, target) is ok


def test_cycle_finder_finds_a_planted_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
