"""The import graph of superstatic/ and agent/: layers flow one way, nothing imports in a circle.

Read with `ast`, not by importing, so a lazy import inside a function counts the same as one at
the top of a module (it is a dependency all the same, only hidden). Imports under
`if TYPE_CHECKING:` never run: they are held to the layering rule but not counted for circles
(a node naming its replica's type, and the replica holding nodes, is not a circle at run time).

The layers, lowest first (a module may import its own layer and the ones below it):

    superstatic.protocol    codec, ops, wire, errors: pure; the only part the agent imports
    superstatic.objects     proxies, shared classes, values, transactions, the local replica
    superstatic.client      connection, stream, embedded agent, one-shot requests, default session
    superstatic.toolkit     queues, locks, waiting, results (built on the client and objects)
    superstatic.tools       the `superstatic` command
    superstatic (API)       superstatic/__init__.py and superstatic/decorators.py

    superstatic_agent.raft  the pure Raft core: itself and superstatic.protocol only
    superstatic_agent       the agent: itself and superstatic.protocol only
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Folder on disk -> import name (pyproject.toml maps agent/ to superstatic_agent).
PACKAGES = {"superstatic": "superstatic", "agent": "superstatic_agent"}

LIBRARY_RANKS = {
    "superstatic.protocol": 0,
    "superstatic.objects": 1,
    "superstatic.client": 2,
    "superstatic.toolkit": 3,
    "superstatic.tools": 4,
}
API_RANK = 5
API_MODULES = ("superstatic", "superstatic.decorators")


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    line: int
    type_only: bool


def module_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder, name in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([name, *parts])] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement with whether it sits under `if TYPE_CHECKING:`."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def walk(node: ast.AST, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    walk_stmt(stmt, True)
                for stmt in child.orelse:
                    walk_stmt(stmt, type_only)
            else:
                walk_stmt(child, type_only)

    def walk_stmt(node: ast.AST, type_only: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append((node, type_only))
        walk(node, type_only)

    walk(tree, False)
    return found


def _resolve(importer: str, node: ast.Import | ast.ImportFrom, known: set[str]) -> list[str]:
    """The project modules an import statement loads (the most specific known module)."""
    targets: list[str] = []
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = importer.split(".")
            if importer not in PACKAGES.values() and not _is_package(importer):
                package = package[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, base] if base else package)
        names = [f"{base}.{alias.name}" for alias in node.names] or [base]
        names = [n if n in known else base for n in names]
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name:
            targets.append(name)
    return targets


_PACKAGE_MODULES: set[str] = set()


def _is_package(module: str) -> bool:
    return module in _PACKAGE_MODULES


def import_graph() -> list[Edge]:
    files = module_files()
    known = set(files)
    _PACKAGE_MODULES.clear()
    _PACKAGE_MODULES.update(m for m, p in files.items() if p.name == "__init__.py")
    edges: list[Edge] = []
    for module, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        for node, type_only in _imports(tree):
            for target in _resolve(module, node, known):
                if target != module:
                    edges.append(Edge(module, target, node.lineno, type_only))
    return edges


def layer_of(module: str) -> tuple[str, int]:
    """(family, rank): the family says which rule applies, the rank orders library layers."""
    if module.startswith("superstatic_agent.raft"):
        return ("raft", 0)
    if module.startswith("superstatic_agent"):
        return ("agent", 0)
    if module in API_MODULES:
        return ("library", API_RANK)
    for prefix, rank in LIBRARY_RANKS.items():
        if module == prefix or module.startswith(prefix + "."):
            return ("library", rank)
    raise AssertionError(f"{module} is in no layer: give it a home in superstatic's subpackages")


def violation(edge: Edge) -> str | None:
    """Why `edge` runs against the layering, or None if it is allowed."""
    family, rank = layer_of(edge.importer)
    target_family, target_rank = layer_of(edge.imported)
    is_protocol = edge.imported.startswith("superstatic.protocol")
    if family == "raft":
        if target_family == "raft" or is_protocol:
            return None
        return "the Raft core may import only itself and superstatic.protocol"
    if family == "agent":
        if target_family in ("agent", "raft") or is_protocol:
            return None
        return "the agent may import only itself and superstatic.protocol"
    if target_family != "library":
        return "the library never imports the agent (it starts it as a process)"
    if target_rank > rank:
        return "a lower layer imports a higher one"
    return None


def circles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components of more than one module in the run-time import graph."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        if not edge.type_only:
            graph.setdefault(edge.importer, set()).add(edge.imported)
            graph.setdefault(edge.imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def connect(v: str) -> None:  # Tarjan; the graph has ~100 modules, recursion is bounded
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_every_module_has_a_layer() -> None:
    for module in module_files():
        layer_of(module)


def test_imports_follow_the_layers() -> None:
    problems = []
    for edge in import_graph():
        why = violation(edge)
        if why is not None:
            kind = "type-only import" if edge.type_only else "import"
            problems.append(f"{edge.importer}:{edge.line} {kind} of {edge.imported}: {why}")
    assert not problems, "\n".join(problems)


def test_no_import_circle() -> None:
    found = circles(import_graph())
    assert not found, "import circles (run-time imports):\n" + "\n".join(
        " <-> ".join(component) for component in found
    )


def test_the_checker_sees_a_circle_and_a_layer_violation() -> None:
    # The checks above must be able to fail: a synthetic graph with both faults.
    edges = [
        Edge("superstatic.objects.a", "superstatic.objects.b", 1, False),
        Edge("superstatic.objects.b", "superstatic.objects.a", 1, False),
        Edge("superstatic.objects.c", "superstatic.objects.d", 1, True),
        Edge("superstatic.objects.d", "superstatic.objects.c", 1, True),
    ]
    assert circles(edges) == [["superstatic.objects.a", "superstatic.objects.b"]]
    assert violation(Edge("superstatic.protocol.codec", "superstatic.client.x", 1, True))
    assert violation(Edge("superstatic_agent.server", "superstatic.objects.txn", 1, False))
    assert violation(Edge("superstatic_agent.raft.core", "superstatic_agent.storage", 1, False))
    assert violation(Edge("superstatic.tools.cli", "superstatic_agent.cli", 1, False))
    allowed = Edge("superstatic.client.connection", "superstatic.objects.txn", 1, False)
    assert violation(allowed) is None


def test_lazy_imports_are_seen() -> None:
    tree = ast.parse("def f():\n    from superstatic.objects import txn\n")
    (node, type_only), *_ = _imports(tree)
    assert not type_only
    assert _resolve("superstatic.objects.values", node, {"superstatic.objects.txn"}) == [
        "superstatic.objects.txn"
    ]
