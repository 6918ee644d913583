"""Imports inside ``spikebench`` go one way and form no cycle.

Every module's imports are read with :mod:`ast`, including those inside functions (an import deferred
to call time is still a dependency). Each module belongs to a layer of :data:`LAYERS` (its longest
matching prefix); a module may import from its own layer and from the layers below it, never from one
above. Importing ``spikebench.a.b`` also runs ``spikebench/a/__init__.py``, so it counts as importing
``spikebench.a`` too when cycles are searched.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import spikebench

PACKAGE = Path(spikebench.__file__).resolve().parent

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # lowest first: (layer name, module prefixes; "spikebench" alone is the package's __init__)
    (
        "base",
        (
            "spikebench",
            "spikebench.registry",
            "spikebench.io",
            "spikebench.heap",
            "spikebench.records",
            "spikebench.precision",
            "spikebench.provenance",
            "spikebench.plugins",
        ),
    ),
    ("config", ("spikebench.config",)),
    ("dynamics", ("spikebench.dynamics",)),
    ("nn", ("spikebench.nn",)),
    ("rules / data", ("spikebench.rules", "spikebench.data")),
    ("builder", ("spikebench.components",)),
    ("train", ("spikebench.train",)),
    ("run directory", ("spikebench.rundir",)),
    ("training run", ("spikebench.train.run",)),
    ("analysis / attacks / perf", ("spikebench.analysis", "spikebench.attacks", "spikebench.perf")),
    ("studies", ("spikebench.studies",)),
    ("report", ("spikebench.report",)),
    ("study catalog", ("spikebench.studies.catalog",)),
    ("study run", ("spikebench.studies.run", "spikebench.studies.publish")),
    ("cli", ("spikebench.cli",)),
]

KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}
"""(importer, imported) -> why it is still allowed. Empty: every upward import is a new one."""


def module_files() -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, whether it is a package ``__init__``)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ["spikebench", *path.relative_to(PACKAGE).with_suffix("").parts]
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


MODULES = module_files()


def _known(name: str) -> str | None:
    """The spikebench module ``name`` refers to (a module, or the module defining the attribute)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> set[str]:
    """The spikebench modules ``module`` imports, anywhere in its body."""
    path, is_pkg = MODULES[module]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_pkg else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            if target == "spikebench" or target.startswith("spikebench."):
                name = _known(target)
                if name is not None and name != module:
                    found.add(name)
    return found


def layer_of(module: str) -> int:
    best, index = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            inside = module.startswith(prefix + ".") and prefix != "spikebench"
            if (module == prefix or inside) and len(prefix) > best:
                best, index = len(prefix), i
    return index


def test_every_module_has_a_layer():
    assert [m for m in MODULES if layer_of(m) < 0] == []
    assert layer_of("spikebench.new_module") < 0  # a new top-level module needs its row in LAYERS


def test_imports_go_one_way():
    upward = []
    for module in MODULES:
        for target in sorted(imports(module)):
            if layer_of(target) > layer_of(module) and (module, target) not in KNOWN_VIOLATIONS:
                upward.append(
                    f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
                )
    assert upward == []


def test_known_violations_still_exist():
    for module, target in KNOWN_VIOLATIONS:
        assert target in imports(module), f"{module} -> {target} is gone: remove it from KNOWN_VIOLATIONS"


def _with_parents(module: str, targets: set[str]) -> set[str]:
    """``targets`` and the packages whose ``__init__`` importing them runs, except ``module``'s own
    packages (those are already being imported when ``module`` runs)."""
    out = set(targets)
    for target in targets:
        parts = target.split(".")
        parents = (".".join(parts[:i]) for i in range(2, len(parts)))
        out.update(p for p in parents if not module.startswith(p + "."))
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as the list of its modules, first repeated last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_no_import_cycles():
    graph = {m: _with_parents(m, imports(m)) - {m} for m in MODULES}
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ],
)
def test_cycle_finder(graph, expected):
    assert find_cycle(graph) == expected


def test_function_level_and_relative_imports_are_read(tmp_path, monkeypatch):
    source = "def f():\n    from spikebench.cli import main\n    from . import registry\n"
    path = tmp_path / "m.py"
    path.write_text(source)
    monkeypatch.setitem(MODULES, "spikebench.fake", (path, False))
    assert imports("spikebench.fake") == {"spikebench.cli", "spikebench.registry"}
