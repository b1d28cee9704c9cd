"""The package stays easy to walk: small modules, imports in one direction."""

from __future__ import annotations

import ast
from pathlib import Path

import actors.bus

PACKAGE = Path(actors.bus.__file__).parent


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps.update([node.module] if node.module else [a.name for a in node.names])
        graph[path.stem] = deps
    return graph


def test_no_module_is_over_500_lines() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in PACKAGE.glob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 500} == {}


def test_the_modules_import_each_other_without_a_cycle() -> None:
    graph = _imports()
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join((*path, module))}"
        if module in done:
            return
        for dep in graph.get(module, ()):
            visit(dep, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())


def test_the_docstring_names_the_flow_modules_in_order() -> None:
    doc = actors.bus.__doc__ or ""
    flow = ["_admission", "_worker", "_chains", "_recording", "_callbacks"]
    positions = [doc.index(f"``{name}``") for name in flow]
    assert positions == sorted(positions)
