"""Which of our packages may import which: the layering rules, checked on the source.

An AST walk over asyncdock/ and plugins/ collects every `import` and `from ... import` of ours,
wherever it sits (module level, inside a function, under `if TYPE_CHECKING:`), relative ones
resolved, into a graph of module -> module edges. `from pkg import name` is an edge to
`pkg.name` when that is a module, else to `pkg`. Importing `a.b.c` also runs `a` and `a.b`, but
those implicit edges to parent packages are left out: they would put every package __init__ in
a cycle with its own children.

A rule is one row of RULES: modules matching `importer` must not import modules matching
`forbidden`. A pattern is a module name that also matches everything below it
(`asyncdock.base` matches `asyncdock.base.oci`) or, ending in `*`, a name prefix (`asyncdock_*`:
every plugin package). `known` lists the offending edges tolerated until the branch removing
them is merged: the rule then fails only on new ones, and the lead empties `known`.
"""
from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[2]


class Edge(NamedTuple):
    importer: str
    imported: str
    where: str  # path:line of the import statement

    def __str__(self) -> str:
        return f"{self.importer} -> {self.imported}  ({self.where})"


class Rule(NamedTuple):
    importer: str
    forbidden: str
    reason: str
    except_importers: tuple[str, ...] = ()
    except_imported: tuple[str, ...] = ()
    known: frozenset[tuple[str, str]] = frozenset()

    @property
    def id(self) -> str:
        return f"{self.importer} !-> {self.forbidden}"


# --------------------------------------------------------------------------- the walker

def find_modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Module name -> file, for every .py file of the given top-level packages under `root`, and
    every extension module by its committed stub (.pyi; the .so is built at set-up)."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")) + sorted((root / package).rglob("*.pyi")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules.setdefault(".".join(parts), path)
    return modules


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _shown_path(module: str, path: Path) -> Path:
    # relative to the checkout when the file is in it, else to the directory holding its package
    if path.is_relative_to(ROOT):
        return path.relative_to(ROOT)
    return path.relative_to(path.parents[len(module.split(".")) - (0 if _is_package(path) else 1)])


def _resolve_from(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if _is_package(path) else module.split(".")[:-1]
    if node.level - 1 > len(package) - 1:
        raise ValueError(f"{path}:{node.lineno}: relative import beyond the top-level package")
    base = package[:len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_edges(modules: dict[str, Path], ours: tuple[str, ...]) -> list[Edge]:
    """Every import of a module whose top-level name starts with one of `ours`. An edge may name
    a module that does not exist (see `dangling`)."""

    def is_ours(name: str) -> bool:
        return name.split(".")[0].startswith(ours)

    edges: list[Edge] = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        shown = _shown_path(module, path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if is_ours(alias.name):
                        edges.append(Edge(module, alias.name, f"{shown}:{node.lineno}"))
            elif isinstance(node, ast.ImportFrom):
                target = _resolve_from(module, path, node)
                if not is_ours(target):
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    edges.append(Edge(module, sub if sub in modules else target, f"{shown}:{node.lineno}"))
    return edges


def _matches(module: str, pattern: str) -> bool:
    if pattern.endswith("*"):
        return module.startswith(pattern[:-1])
    return module == pattern or module.startswith(pattern + ".")


def _matches_any(module: str, patterns: Iterable[str]) -> bool:
    return any(_matches(module, p) for p in patterns)


def violations(rule: Rule, edges: Iterable[Edge]) -> list[Edge]:
    return sorted({e for e in edges
                   if _matches(e.importer, rule.importer) and _matches(e.imported, rule.forbidden)
                   and not _matches_any(e.importer, rule.except_importers)
                   and not _matches_any(e.imported, rule.except_imported)})


def dangling(edges: Iterable[Edge], modules: dict[str, Path]) -> list[Edge]:
    """Imports of modules that do not exist: edges to nothing, which no rule would see."""
    return sorted(e for e in edges if e.imported not in modules)


def import_cycles(edges: Iterable[Edge]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (or of one importing itself):
    each is a set of modules every one of which imports, through the others, every other.
    Tarjan's algorithm, iterative (the graph is deep enough to worry the recursion limit)."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.importer, set()).add(e.imported)
        graph.setdefault(e.imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[frozenset[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in graph[node]:
                        found.append(frozenset(component))
    return found


# --------------------------------------------------------------------------- the rules

CORE = ("containers", "images", "registry", "content", "snapshots", "runtime", "events", "networks",
        "volumes", "logs", "base")
PLUGINS = tuple(sorted(p.name for p in (ROOT / "plugins").iterdir()
                       if p.name.startswith("asyncdock_") and (p / "__init__.py").exists()))

RULES: list[Rule] = [
    Rule("asyncdock.base", "asyncdock", "the base layer imports nothing of ours outside itself",
         except_imported=("asyncdock.base",)),
    Rule("asyncdock.base", "asyncdock_*", "the base layer imports nothing of ours outside itself"),
    Rule("asyncdock.registry", "asyncdock.images",
         "the registry client speaks the distribution API over base.oci's models; the image store "
         "is built on top of it"),
    Rule("asyncdock.snapshots", "asyncdock.containers",
         "snapshots are a lower layer: containers mount them, not the other way round"),
    *(Rule(pure, "asyncdock", "the create plan and the resource checks are pure: what they need from "
           "the host and the daemon comes in as arguments, never from a store, a clock or the host itself",
           except_imported=("asyncdock.base", "asyncdock.logs.base", "asyncdock.containers.models",
                            "asyncdock.containers.resources", "asyncdock.containers.spec"))
      for pure in ("asyncdock.containers.createplan", "asyncdock.containers.resources")),
    *(Rule(f"asyncdock.{core}", forbidden, "the core never depends on a front end or a plugin")
      for core in CORE for forbidden in ("asyncdock.cli", "asyncdock.client", "asyncdock_*")),
    *(Rule(f"asyncdock.{core}", "asyncdock.api",
           "managers serve the HTTP layer, not the other way round (filters are in asyncdock.base; "
           "the HTTP side of a container's streams is asyncdock.api.streams)")
      for core in CORE),
    *(Rule(plugin, "asyncdock_*", "a plugin must not import another plugin: what two share belongs "
           "in the core (e.g. asyncdock.snapshots.dirstore)", except_imported=(plugin,))
      for plugin in PLUGINS),
    Rule("asyncdock", "asyncdock.engine",
         "only what assembles the engine imports it; managers get typed dependencies",
         except_importers=("asyncdock.engine", "asyncdock.daemon", "asyncdock.api.server",
                           "asyncdock.client.embedded")),
    Rule("asyncdock_*", "asyncdock.engine",
         "only what assembles the engine imports it; plugins get an InitContext"),
]

# Import cycles tolerated (strongly connected components): none. The modules the container
# supervisor drives are typed against containers/supervisor.py, not against the manager.
KNOWN_CYCLES: list[frozenset[str]] = []


@pytest.fixture(scope="module")
def modules() -> dict[str, Path]:
    return find_modules(ROOT, ["asyncdock"]) | find_modules(ROOT / "plugins", PLUGINS)


@pytest.fixture(scope="module")
def edges(modules: dict[str, Path]) -> list[Edge]:
    return import_edges(modules, ("asyncdock",))


def _listing(items: Iterable[object]) -> str:
    return "\n  " + "\n  ".join(str(i) for i in items)


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_import_rule(rule: Rule, edges: list[Edge]) -> None:
    new = [e for e in violations(rule, edges) if (e.importer, e.imported) not in rule.known]
    assert not new, f"{rule.id}: {rule.reason}; offending imports:{_listing(new)}"


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_rule_names_real_modules(rule: Rule, modules: dict[str, Path]) -> None:
    # A misspelt pattern would match nothing and pass for ever.
    for pattern in (rule.importer, rule.forbidden, *rule.except_importers, *rule.except_imported):
        assert any(_matches(m, pattern) for m in modules), f"{rule.id}: no module matches {pattern!r}"


def test_every_import_of_ours_names_a_module(edges: list[Edge], modules: dict[str, Path]) -> None:
    # Also what keeps the rules honest: an import left pointing at a moved module would be an
    # edge to nothing, invisible to every rule (and an ImportError waiting in some function).
    missing = dangling(edges, modules)
    assert not missing, f"imports of modules that do not exist:{_listing(missing)}"


def test_no_import_cycles(edges: list[Edge]) -> None:
    grown = [c for c in import_cycles(edges) if not any(c <= known for known in KNOWN_CYCLES)]
    assert not grown, "import cycles:" + "".join(
        _listing(sorted(c)) + "\n" for c in grown)


# --------------------------------------------------------------------------- the walker itself

def test_walker_finds_a_forbidden_import_and_a_cycle(tmp_path: Path) -> None:
    """A synthetic package with one forbidden import (relative, inside a function), one under
    TYPE_CHECKING, one of a module that does not exist and one cycle: the walker must see them
    all, so the rules above cannot pass by finding nothing."""
    files = {
        "fake/__init__.py": "",
        "fake/low/__init__.py": "",
        "fake/low/a.py": "import os\n\ndef f():\n    from ..high import b\n    return b, os\n",
        "fake/low/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fake.high.b import B\n",
        "fake/low/d.py": "import fake.gone\n",
        "fake/high/__init__.py": "",
        "fake/high/b.py": "from . import x\nclass B: ...\n",
        "fake/high/x.py": "import fake.high.y\n",
        "fake/high/y.py": "from .x import *\nfrom .. import low\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    mods = find_modules(tmp_path, ["fake"])
    assert set(mods) == {"fake", "fake.low", "fake.low.a", "fake.low.c", "fake.low.d", "fake.high",
                         "fake.high.b", "fake.high.x", "fake.high.y"}
    found = import_edges(mods, ("fake",))
    assert {(e.importer, e.imported) for e in found} == {
        ("fake.low.a", "fake.high.b"), ("fake.low.c", "fake.high.b"), ("fake.high.b", "fake.high.x"),
        ("fake.high.x", "fake.high.y"), ("fake.high.y", "fake.high.x"), ("fake.high.y", "fake.low"),
        ("fake.low.d", "fake.gone"),
    }
    assert dangling(found, mods) == [Edge("fake.low.d", "fake.gone", "fake/low/d.py:1")]
    bad = violations(Rule("fake.low", "fake.high", "low must not import high"), found)
    assert [(e.importer, e.imported, e.where) for e in bad] == [
        ("fake.low.a", "fake.high.b", "fake/low/a.py:4"), ("fake.low.c", "fake.high.b", "fake/low/c.py:3")]
    assert violations(Rule("fake.low", "fake.high", "", except_importers=("fake.low",)), found) == []
    assert import_cycles(found) == [frozenset({"fake.high.x", "fake.high.y"})]
    # a self-import is a cycle too; a chain is not
    assert import_cycles([Edge("p.a", "p.a", ""), Edge("p.b", "p.c", "")]) == [frozenset({"p.a"})]
