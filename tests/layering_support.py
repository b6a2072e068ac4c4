"""The import graph of the freezewatch package, read from its source (tests/test_layering.py).

Every import counts: top-level, inside functions, under ``TYPE_CHECKING``.
A module is named by its dotted path inside the package (``_sinks.log``);
``from . import x`` names the submodule ``x`` when there is one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "freezewatch"


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted name (relative to the package) -> file, for every module."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts) or "__init__"] = path
    return out


def _package_of(name: str, path: Path) -> list[str]:
    parts = name.split(".") if name != "__init__" else []
    return parts if path.name == "__init__.py" else parts[:-1]


def imports(name: str, path: Path, known: Iterable[str]) -> tuple[set[str], set[str]]:
    """(freezewatch modules, top-level third-party/stdlib packages) imported by a module."""
    known = set(known)
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    inner: set[str] = set()
    outer: set[str] = set()

    def add(dotted: str) -> None:
        # The deepest known module that this dotted name names.
        parts = dotted.split(".") if dotted else []
        while parts and ".".join(parts) not in known:
            parts.pop()
        inner.add(".".join(parts) if parts else "__init__")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "freezewatch" or a.name.startswith("freezewatch."):
                    add(a.name[len("freezewatch."):] if "." in a.name else "")
                else:
                    outer.add(a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                mod = node.module or ""
                if mod == "freezewatch" or mod.startswith("freezewatch."):
                    base = mod[len("freezewatch."):] if "." in mod else ""
                else:
                    outer.add(mod.split(".")[0])
                    continue
            else:
                pkg = _package_of(name, path)
                pkg = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
                base = ".".join([*pkg, *([node.module] if node.module else [])])
            for a in node.names:
                cand = f"{base}.{a.name}" if base else a.name
                add(cand if cand in known else base)
    inner.discard(name)
    return inner, outer


def graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    mods = modules(root)
    return {name: imports(name, path, mods)[0] for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out
