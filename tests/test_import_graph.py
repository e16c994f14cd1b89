"""The package's import graph, read from the source with `ast`: no circles, no upward imports.

Every ``import``/``from ... import`` in asprof/ counts, those inside functions too (a lazy import
is still a dependency), resolved to the asprof module it names: ``from asprof.a import b`` is an
edge to ``asprof.a.b`` when that is a module, else to ``asprof.a``.

The layers, top to bottom (issue 18, STYLE):

    cli → validate → train / simulate / probe → cluster / traces → optimizers / the package root

A package may import from the layers below its own, never from its own layer's other packages
(train → probe is as tangled as probe → train) nor from above. The package root's modules
(asprof/__init__.py, errors, units, spec, presets) are the floor: the vocabulary every package
shares, so every package, optimizers included, may import them, and they import no package.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

import asprof

ROOT = Path(asprof.__file__).parent

# Higher imports lower; "" is the package root's own modules.
LAYERS = {"cli": 5, "validate": 4, "train": 3, "simulate": 3, "probe": 3, "cluster": 2, "traces": 2,
          "optimizers": 1, "": 0}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        parts = ["asprof", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The asprof module ``name`` lives in (a dotted name may end in a function or class)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _edges(module: str, path: Path):
    """(imported module, line) for every asprof import in ``module``'s source."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names = [f"{source}.{a.name}" if f"{source}.{a.name}" in MODULES else source for a in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name) if name.split(".")[0] == "asprof" else None
            if target is not None and target != module:
                yield target, node.lineno


GRAPH = {m: sorted(set(_edges(m, p))) for m, p in sorted(MODULES.items())}


def _package(module: str) -> str:
    """The top-level package a module belongs to ("" for the root's own modules)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and MODULES[module].name == "__init__.py") else ""


def _where(module: str, line: int) -> str:
    return f"{MODULES[module].relative_to(ROOT.parent)}:{line}"


def test_the_graph_sees_imports_inside_functions_and_relative_ones(tmp_path):
    assert any(t == "asprof.validate.run" for t, _ in GRAPH["asprof.cli.validate"])  # imported inside command()
    assert any(t == "asprof" for t, _ in GRAPH["asprof.cli"])  # from asprof import __version__
    src = tmp_path / "fake.py"
    src.write_text("import os\nfrom .schema import Host\n\ndef f():\n    from ..units import si\n"
                   "    import asprof.traces.io as tio\n")
    assert sorted(_edges("asprof.traces.fake", src)) == [("asprof.traces.io", 6), ("asprof.traces.schema", 2),
                                                         ("asprof.units", 5)]
    assert _package("asprof.spec") == "" and _package("asprof.traces") == "traces"
    assert _package("asprof.traces.io") == "traces"


def test_every_package_has_a_layer():
    unknown = sorted({_package(m) for m in MODULES} - set(LAYERS))
    assert not unknown, f"place these packages in LAYERS (tests/test_import_graph.py): {unknown}"


def test_no_upward_or_sideways_imports():
    bad = []
    for module, edges in GRAPH.items():
        src = _package(module)
        for target, line in edges:
            dst = _package(target)
            if src != dst and LAYERS[dst] >= LAYERS[src]:
                way = "sideways" if LAYERS[dst] == LAYERS[src] else "upward"
                bad.append(f"{_where(module, line)}: {module} imports {target} ({way}: {src or 'root'} -> {dst or 'root'})")
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _describe(cycle: list[str]) -> str:
    inside = set(cycle)
    return "\n".join(f"  {_where(m, line)}: {m} imports {t}" for m in cycle for t, line in GRAPH[m] if t in inside)


def test_cycle_finder():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_circles_between_packages():
    """Implied by the layers, but said on its own: which packages form a circle, through which imports."""
    deps = defaultdict(set)
    for module, edges in GRAPH.items():
        for target, _ in edges:
            if _package(module) != _package(target):
                deps[_package(module)].add(_package(target))
    found = []
    for cycle in _cycles(deps):
        found.append(" <-> ".join(p or "root" for p in cycle) + ":\n" + "\n".join(
            f"  {_where(m, line)}: {m} imports {t}" for m, edges in GRAPH.items() for t, line in edges
            if _package(m) in cycle and _package(t) in cycle and _package(m) != _package(t)))
    assert not found, "circles between packages:\n" + "\n".join(found)


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_no_circles_among_a_packages_modules(package):
    mine = {m for m in MODULES if _package(m) == package}
    cycles = _cycles({m: {t for t, _ in GRAPH[m] if t in mine} for m in mine})
    assert not cycles, f"import circles in {package or 'the package root'}:\n" + "\n\n".join(map(_describe, cycles))


def test_no_module_over_400_lines():
    long = {str(p.relative_to(ROOT.parent)): n for p in sorted(ROOT.rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long, f"modules over 400 lines (split them by what they do): {long}"
