"""The simulator's modules import one another without a cycle, and the API modules never import the
server: they get the shared state as a `SimContext`. Every import counts, function-level and
`if TYPE_CHECKING:` ones included (a checker follows them)."""

from __future__ import annotations

import ast
import pathlib

SIMULATOR = pathlib.Path(__file__).resolve().parents[2] / "batch_scheduler" / "simulator"
PACKAGE = "batch_scheduler.simulator"
API_MODULES = ("anthropic.api", "openai.api", "openai.files", "anthropic.inline", "batches", "context")


def imports_of(path: pathlib.Path, modules: set[str]) -> set[str]:
    """The modules of `modules` that `path` imports anywhere in it (`from pkg import mod` names mod)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found & modules


def import_graph(root: pathlib.Path = SIMULATOR, package: str = PACKAGE) -> dict[str, set[str]]:
    paths = {".".join([package, *p.relative_to(root).with_suffix("").parts]).removesuffix(".__init__"): p
             for p in root.rglob("*.py")}
    modules = set(paths)
    return {name: imports_of(path, modules) - {name} for name, path in paths.items()}


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of `graph` (its modules in order, the first repeated last), or []."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str]:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return []
        for dep in sorted(graph.get(node, ())):
            found = visit(dep, path + [node])
            if found:
                return found
        done.add(node)
        return []

    for start in sorted(graph):
        found = visit(start, [])
        if found:
            return found
    return []


def test_no_import_cycle_in_the_simulator_type_checking_imports_included():
    assert cycle(import_graph()) == []


def test_no_api_module_imports_the_server():
    graph = import_graph()
    assert {m for m in API_MODULES if f"{PACKAGE}.server" in graph[f"{PACKAGE}.{m}"]} == set()


def test_a_cycle_through_a_type_checking_import_is_found(tmp_path):
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "server.py").write_text("from toy.api import Api\n")
    (tmp_path / "api.py").write_text("from typing import TYPE_CHECKING\n"
                                     "if TYPE_CHECKING:\n    from toy.server import Server\n")
    assert cycle(import_graph(tmp_path, "toy")) == ["toy.api", "toy.server", "toy.api"]
