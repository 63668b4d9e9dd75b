"""The package's layers, kept honest: imports point one way and no module imports itself in a circle.

core -> providers -> job -> daemon -> the library API (`batch_scheduler/__init__.py`) -> commands.
`simulator/` stands apart: it imports core only. Function-level imports count; imports under
`if TYPE_CHECKING:` do not (they never run).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "batch_scheduler"
RANKS = {"core": 0, "state": 1, "providers": 1, "job": 2, "daemon": 3, "cluster": 3, "": 4, "testing": 4, "commands": 5, "__main__": 6}
MAX_LINES = 500


def module_name(path: pathlib.Path, root: pathlib.Path = PACKAGE) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: pathlib.Path, name: str, modules: set[str]) -> set[str]:
    """The package modules `path` imports, anywhere in it but under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)  # `from pkg import module`
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in modules}


def import_graph(root: pathlib.Path = PACKAGE) -> dict[str, set[str]]:
    paths = {module_name(p, root): p for p in root.rglob("*.py")}
    modules = set(paths)
    graph = {}
    for name, path in paths.items():
        deps = imports_of(path, name, modules)
        # a module's own package __init__ runs first anyway: importing it is no edge worth a cycle
        graph[name] = {d for d in deps if d != name and not name.startswith(d + ".")}
    return graph


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in sorted(graph.items()):
        for dep in sorted(deps):
            src, dst = layer_of(mod), layer_of(dep)
            if src == dst:
                continue
            if src == "simulator" or dst == "simulator":
                if src == "simulator" and dst != "core":
                    bad.append(f"{mod} -> {dep}: the simulator imports core only")
                continue
            if RANKS[src] < RANKS[dst]:
                bad.append(f"{mod} -> {dep}: {src or 'the package'} is below {dst}")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
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
            strong(v)
    return found


def test_imports_point_down_the_layers():
    assert violations(import_graph()) == []


def test_no_import_cycle_function_level_imports_included():
    assert cycles(import_graph()) == []


def test_every_module_is_in_a_known_layer():
    unknown = {layer_of(m) for m in import_graph()} - set(RANKS) - {"simulator"}
    assert unknown == set()


def test_no_module_over_500_lines():
    long = {module_name(p): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


@pytest.fixture
def toy(tmp_path):
    """A package laid out like ours, to show the checks catch what they claim to."""
    pkg = tmp_path / "batch_scheduler"
    for sub in ("core", "job", "simulator", "commands"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    return pkg


def test_a_function_level_import_cycle_is_found(toy):
    (toy / "job" / "a.py").write_text("from batch_scheduler.job import b\n")
    (toy / "job" / "b.py").write_text("def f():\n    from batch_scheduler.job.a import x\n")
    assert cycles(import_graph(toy)) == [["batch_scheduler.job.a", "batch_scheduler.job.b"]]


def test_a_type_checking_import_is_no_cycle(toy):
    (toy / "job" / "a.py").write_text("from batch_scheduler.job import b\n")
    (toy / "job" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                      "    from batch_scheduler.job.a import x\n")
    assert cycles(import_graph(toy)) == []


def test_an_upward_import_is_a_violation(toy):
    (toy / "core" / "x.py").write_text("def f():\n    from batch_scheduler.commands.main import main\n")
    (toy / "commands" / "main.py").write_text("")
    (toy / "simulator" / "s.py").write_text("from batch_scheduler.job import y\n")
    (toy / "job" / "y.py").write_text("")
    assert violations(import_graph(toy)) == [
        "batch_scheduler.core.x -> batch_scheduler.commands.main: core is below commands",
        "batch_scheduler.simulator.s -> batch_scheduler.job: the simulator imports core only",
        "batch_scheduler.simulator.s -> batch_scheduler.job.y: the simulator imports core only",
    ]
