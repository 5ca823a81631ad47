"""Imports flow one way, and no module reaches into another's private names.

Read from the source (``ast``), not by importing: every import of a ``graphgrad`` module by
another, at module level or inside a function, is an edge. The graph must have no cycle, and
no module may import a name that starts with ``_`` from another module, or read one as an
attribute of an imported module (``_fused._K``): what two modules share has a public home.
Private *modules* (``graphgrad._engine``) are the package's internals and may be imported by
their public names.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PKG = SRC / "graphgrad"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_pkg: bool, level: int, target: str | None) -> str:
    if level == 0:
        return target or ""
    base = module.split(".")
    if not is_pkg:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        out[_module_name(path)] = (path, ast.parse(path.read_text(encoding="utf-8")))
    return out


MODULES = _modules()


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _compiled(module: str) -> bool:
    path = SRC.joinpath(*module.split("."))
    return path.with_suffix(".pyx").exists()


def _imports() -> tuple[dict[str, set[str]], list[str]]:
    """Module -> the graphgrad modules it imports; and every private reach, as text."""
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    reaches = []
    for mod, (path, tree) in MODULES.items():
        is_pkg = path.name == "__init__.py"
        aliases: dict[str, str] = {}  # local name -> graphgrad module
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_pkg, node.level, node.module)
                if not base.startswith("graphgrad"):
                    continue
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    if sub in MODULES:  # `from . import tensor`
                        edges[mod].add(sub)
                        aliases[a.asname or a.name] = sub
                    elif _compiled(sub):  # a Cython module (graphgrad._kernels)
                        aliases[a.asname or a.name] = sub
                    elif base in MODULES:
                        edges[mod].add(base)
                        if _private(a.name) and base != mod:
                            reaches.append(f"{mod} imports {a.name} from {base}")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in MODULES:
                        edges[mod].add(a.name)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and _private(node.attr)
            ):
                reaches.append(f"{mod} reads {aliases[node.value.id]}.{node.attr}")
    # a package's __init__ re-exports its modules: importing a package means its __init__
    for m in edges:
        edges[m].discard(m)
    return edges, reaches


EDGES, REACHES = _imports()

_PYX_FROM = re.compile(r"^from (\.*)([\w.]*) import (.+)$", re.M)


def _pyx_reaches_in(mod: str, text: str) -> list[str]:
    """The private reaches of Cython module ``mod`` (source ``text``), read as text: ``ast``
    cannot parse Cython. ``from x import _name`` of a graphgrad module, or ``alias._name``
    where ``alias`` is an imported graphgrad module."""
    out = []
    aliases = set()
    for dots, base, names in _PYX_FROM.findall(text):
        if not dots and not base.startswith("graphgrad"):
            continue  # cimports of C libraries, numpy, ...
        pkg = _resolve(mod, False, len(dots), base or None)
        for part in names.split(","):
            name, _, alias = part.strip().partition(" as ")
            if f"{pkg}.{name}" in MODULES or _compiled(f"{pkg}.{name}"):
                aliases.add(alias or name)
            elif _private(name):
                out.append(f"{mod} imports {name} from {pkg}")
    for alias in sorted(aliases):
        for attr in re.findall(rf"\b{alias}\.(\w+)", text):
            if _private(attr):
                out.append(f"{mod} reads {alias}.{attr}")
    return out


def _pyx_reaches() -> list[str]:
    out = []
    for path in sorted(PKG.rglob("*.pyx")):
        mod = _module_name(path.with_suffix(".py"))
        out += _pyx_reaches_in(mod, path.read_text(encoding="utf-8"))
    return out


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in edges:
                    continue
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return out


def _without_package_faces(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The package ``graphgrad`` itself re-exports the public API (it imports nearly all);
    a module importing ``graphgrad.<pkg>`` means that package's ``__init__``."""
    return {m: {t for t in ts if t != "graphgrad"} for m, ts in edges.items() if m != "graphgrad"}


def test_no_import_cycles() -> None:
    cycles = _cycles(_without_package_faces(EDGES))
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_private_reaches() -> None:
    reaches = REACHES + _pyx_reaches()
    assert not reaches, "private names used across modules:\n" + "\n".join(reaches)


def test_the_graph_walk_is_core() -> None:
    """``collect`` lives in ``_graph`` (layer 3): the scalar-unit, path and expression modules
    walk graphs without importing the pictures (``viz``)."""
    for mod in ("graphgrad.expr", "graphgrad.units", "graphgrad.paths", "graphgrad._engine"):
        assert not any(t.startswith("graphgrad.viz") for t in EDGES[mod]), f"{mod} imports viz"
    assert "graphgrad._graph" in EDGES["graphgrad.units"]


def test_the_checks_can_fail() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _resolve("graphgrad.viz.trace", False, 2, "ops") == "graphgrad.ops"
    assert _resolve("graphgrad.ops", True, 1, "_xp") == "graphgrad.ops._xp"
    pyx = "from . import _scalar_py as _py\nfrom ._state import _COUNTER\nx = _py._pow(_py.ok)\n"
    assert _pyx_reaches_in("graphgrad._core", pyx) == [
        "graphgrad._core imports _COUNTER from graphgrad._state",
        "graphgrad._core reads _py._pow",
    ]
