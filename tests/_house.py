"""The house rules of docs/architecture.md, measured on the source (AST only, nothing imported).

Used by test_house_rules.py; run as a script for a list of every breach: ``python tests/_house.py``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).parent.parent / "pflnas"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 500


def modules() -> dict[str, Path]:
    """Every module of pflnas by dotted name (a package by its own name, for its ``__init__``)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements run at some point (module level or in a function), not the TYPE_CHECKING ones."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, str | None, int]]:
    """(module imported, name taken from it or None, line) for each pflnas import of a module."""
    tree = ast.parse(path.read_text())
    out = []
    for node in _imports(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name.startswith("pflnas")]
            continue
        target = _absolute(name, node, path.name == "__init__.py")
        if not target.startswith("pflnas"):
            continue
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            out.append((sub, None, node.lineno) if sub in known else (target, alias.name, node.lineno))
    return out


def graph() -> dict[str, set[str]]:
    """Module -> the pflnas modules it imports (importing a.b.c also runs a and a.b)."""
    known = modules()
    edges: dict[str, set[str]] = {m: set() for m in known}
    for name, path in known.items():
        for target, _, _ in imports_of(name, path, known):
            parts = target.split(".")
            for i in range(2, len(parts) + 1):
                mod = ".".join(parts[:i])
                if mod in known and mod != name and not name.startswith(mod + "."):
                    edges[name].add(mod)
    return edges


def cycles() -> list[list[str]]:
    """The import cycles between modules: strongly connected components of more than one module."""
    return _components(graph())


def package_graph() -> dict[str, set[str]]:
    """Top-level package (or top-level module) -> the ones it imports."""
    out: dict[str, set[str]] = {}
    for module, targets in graph().items():
        out.setdefault(_package(module), set()).update(_package(t) for t in targets)
    return {p: targets - {p} for p, targets in out.items()}


def package_cycles() -> list[list[str]]:
    """Packages that import each other, directly or around a loop (they must depend only downward)."""
    return _components(package_graph())


def _components(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
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

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def private_imports() -> list[str]:
    """``from pflnas.x import _name`` (or of a module ``_name``) across top-level packages."""
    known, out = modules(), []
    for name, path in known.items():
        for target, alias, line in imports_of(name, path, known):
            if _package(target) == _package(name):
                continue
            names = [alias or "", *target.split(".")[1:]]
            private = any(n.startswith("_") and not n.endswith("__") for n in names)
            if private:
                out.append(f"{path.relative_to(ROOT.parent)}:{line}: {target} {alias or ''}".strip())
    return out


def cli_imports() -> list[str]:
    known = modules()
    return [
        f"{path.relative_to(ROOT.parent)}:{line}: {target}"
        for name, path in known.items()
        if not name.startswith("pflnas.cli") and name != "pflnas.__main__"
        for target, _, line in imports_of(name, path, known)
        if target == "pflnas.cli" or target.startswith("pflnas.cli.")
    ]


def long_functions() -> list[str]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    out.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: {node.name} ({lines} lines)")
    return out


def long_modules() -> list[str]:
    return [
        f"{path.relative_to(ROOT.parent)} ({n} lines)"
        for path in sorted(ROOT.rglob("*.py"))
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    ]


if __name__ == "__main__":
    for title, found in (
        ("cycles", [" <-> ".join(c) for c in cycles()]),
        ("package cycles", [" <-> ".join(c) for c in package_cycles()]),
        ("private imports across packages", private_imports()),
        ("pflnas.cli imported outside the CLI", cli_imports()),
        ("functions over 80 lines", long_functions()),
        ("modules over 500 lines", long_modules()),
    ):
        print(f"## {title}: {len(found)}")
        print("\n".join(found))
