"""The package layout: one job per package, no import cycles, a sans-IO core.

The import graph is read from the source (every ``import`` statement,
including those under ``TYPE_CHECKING``), so a cycle that only type checking
would see is still a cycle here.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import trinomite

ROOT = pathlib.Path(trinomite.__file__).parent
#: Packages that must never import trio: bytes, events and decisions only.
SANS_IO = ("protocol", "ring", "cluster", "config")
#: Where each part of a node lives (a newcomer's map; see the package docstrings).
PARTS = ("net", "datastore", "peering", "client", "node", "admin", "stats")


def _module_name(path: pathlib.Path) -> str:
    parts = ["trinomite", *path.relative_to(ROOT).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: pathlib.Path) -> set[str]:
    """Every trinomite module (or package) the file imports."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    return {
        name: {target for target in _imports(path) if target in files and target != name}
        for name, path in files.items()
    }


def _group(module: str) -> str:
    """The unit of layering: a subpackage, or a top-level module."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_back():
    assert _cycles(_graph()) == []


def test_packages_are_layered():
    groups: dict[str, set[str]] = {}
    for name, targets in _graph().items():
        source = _group(name)
        groups.setdefault(source, set()).update(
            _group(t) for t in targets if _group(t) not in (source, "trinomite")
        )
    assert _cycles(groups) == []


def test_cycle_finder_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("package", SANS_IO)
def test_sans_io_packages_never_import_trio(package):
    for path in (ROOT / package).rglob("*.py"):
        imported = _imports(path) | {
            alias.name
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        assert not {m for m in imported if m == "trio" or m.startswith("trio.")}, path


@pytest.mark.parametrize("package", PARTS)
def test_every_part_is_a_documented_package(package):
    init = ROOT / package / "__init__.py"
    assert ast.get_docstring(ast.parse(init.read_text()))
