"""The import graph of tsgu_core and tsgu_backends: no cycle, and imports only run down the layers.

Every module is parsed with :mod:`ast` (nothing is imported): every ``import`` counts, also those inside
functions, except under ``if TYPE_CHECKING:``. ``from tsgu_core import X`` counts as an import of the module
that defines ``X`` (the lazy ``_WHERE`` map of ``tsgu_core/__init__.py``). The layers of ``tsgu_core``, bottom
up: errors → base → plugins → sparse → engine → api (with ``tsgu_core.nn``, its public alias, and
``tsgu_core.distributions``, built on the front doors) → cli, testing, examples. ``tsgu_core`` never imports
``tsgu_backends``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tsgu_core", "tsgu_backends")

LAYERS = {
    "tsgu_core.errors": 0,
    "tsgu_core.base": 1,
    "tsgu_core.plugins": 2,
    "tsgu_core.sparse": 3,
    "tsgu_core.engine": 4,
    "tsgu_core.api": 5,
    "tsgu_core.nn": 5,
    "tsgu_core.distributions": 5,
    "tsgu_core.cli": 6,
    "tsgu_core.testing": 6,
    "tsgu_core.examples": 6,
}
"""Each part of tsgu_core and its layer: a module may import its own layer or lower ones."""

Edge = tuple[str, str, str]  # (importer, imported, "file:line")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _lazy_names() -> dict[str, str]:
    """``tsgu_core._WHERE``, read from the source: public name → defining module."""
    tree = ast.parse((ROOT / "tsgu_core" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_WHERE" for t in node.targets):
            where: dict[str, str] = ast.literal_eval(node.value)
            return where
    raise AssertionError("tsgu_core/__init__.py has no _WHERE map")


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, skipping the bodies of ``if TYPE_CHECKING:`` (and ``typing.TYPE_CHECKING``)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            test = child.test if isinstance(child, ast.If) else None
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else None
            if name == "TYPE_CHECKING":
                stack.extend(child.orelse)  # the else branch runs
                continue
            stack.append(child)


def import_graph() -> tuple[dict[str, list[Edge]], dict[str, Path]]:
    """Importer → its edges (imported module, where), over the modules of :data:`PACKAGES`."""
    modules, where = _modules(), _lazy_names()

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, list[Edge]] = {name: [] for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), str(path))
        for node in _runtime_nodes(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".") if is_package else name.split(".")[:-1]
                    parts = parts[: len(parts) - (node.level - 1)]
                    base = ".".join(parts + ([base] if base else []))
                for alias in node.names:
                    if base == "tsgu_core" and alias.name in where:
                        targets.append(where[alias.name])
                    else:
                        targets.append(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
            for target in targets:
                module = known(target)
                if module is None or module in PACKAGES or module == name or name.startswith(module + "."):
                    continue  # outside these packages, a root package (lazy, imports nothing), or its own parent
                line = getattr(node, "lineno", 0)
                graph[name].append((name, module, f"{path.relative_to(ROOT)}:{line}"))
    return graph, modules


def find_cycle(graph: dict[str, list[Edge]]) -> list[Edge] | None:
    """One import cycle as its chain of edges, or ``None`` (depth-first search, colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[Edge] = []

    def visit(node: str) -> list[Edge] | None:
        state[node] = 1
        for edge in graph.get(node, []):
            target = edge[1]
            if state.get(target) == 1:
                start = next((i for i, e in enumerate(path) if e[0] == target), len(path))
                return [*path[start:], edge]
            if target not in state:
                path.append(edge)
                found = visit(target)
                if found:
                    return found
                path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _layer(module: str) -> int | None:
    for prefix, rank in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return None


def layer_violations(graph: dict[str, list[Edge]]) -> list[str]:
    """Every import that runs up the layers of tsgu_core, or from tsgu_core into tsgu_backends."""
    wrong = []
    for edges in graph.values():
        for importer, imported, where in edges:
            if not importer.startswith("tsgu_core"):
                continue
            if imported.startswith("tsgu_backends"):
                wrong.append(f"{importer} imports {imported} ({where}): tsgu_core never imports tsgu_backends")
                continue
            low, high = _layer(imported), _layer(importer)
            if low is None or high is None:
                wrong.append(f"{importer} imports {imported} ({where}): a module outside the listed layers")
            elif low > high:
                wrong.append(f"{importer} (layer {high}) imports {imported} (layer {low}) upwards ({where})")
    return wrong


def _chain(cycle: list[Edge]) -> str:
    return "\n".join(f"  {a} → {b}  ({where})" for a, b, where in cycle)


def test_there_is_no_import_cycle():
    graph, _ = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "an import cycle (imports inside functions count):\n" + _chain(cycle or [])


def test_imports_run_down_the_layers():
    graph, _ = import_graph()
    wrong = layer_violations(graph)
    assert wrong == [], "imports against the layers:\n  " + "\n  ".join(wrong)


def test_every_tsgu_core_module_has_a_layer():
    _, modules = import_graph()
    assert [m for m in modules if m.startswith("tsgu_core.") and _layer(m) is None] == []


def test_the_graph_sees_imports_inside_functions_and_through_the_lazy_map():
    """The checker itself: it finds what it must (so its green means something)."""
    graph, _ = import_graph()
    targets = {module: {b for _, b, _ in edges} for module, edges in graph.items()}
    assert "tsgu_core.engine.traced" in targets["tsgu_core.api.solve"]  # imported inside solve_values
    assert "tsgu_core.api.triangular" in targets["tsgu_core.api.solve"]  # inside solve()
    assert "tsgu_core.sparse.pattern" in targets["tsgu_core.testing.conformance"]  # `from tsgu_core import ...`
    assert "tsgu_core.api.distributed" not in targets["tsgu_core.engine.traced"]
    assert targets["tsgu_core.errors"] == set()


def test_the_checker_reports_a_cycle_and_an_upward_import_with_their_chain():
    graph: dict[str, list[Edge]] = {
        "tsgu_core.sparse.pattern": [("tsgu_core.sparse.pattern", "tsgu_core.engine.autograd", "p.py:3")],
        "tsgu_core.engine.autograd": [("tsgu_core.engine.autograd", "tsgu_core.engine.prepared", "a.py:5")],
        "tsgu_core.engine.prepared": [("tsgu_core.engine.prepared", "tsgu_core.sparse.pattern", "r.py:7")],
    }
    cycle = find_cycle(graph)
    assert cycle is not None and sorted(a for a, _, _ in cycle) == sorted(graph)
    assert all(cycle[i][1] == cycle[(i + 1) % len(cycle)][0] for i in range(len(cycle)))  # a closed chain
    assert "p.py:3" in _chain(cycle)
    assert layer_violations(graph) == [
        "tsgu_core.sparse.pattern (layer 3) imports tsgu_core.engine.autograd (layer 4) upwards (p.py:3)"
    ]
    assert find_cycle({"a": [("a", "b", "x:1")], "b": []}) is None
