"""The package's layers, kept honest: imports point one way and no module imports itself in a circle.

core -> state, providers -> job -> daemon, cluster -> the library API (`batch_scheduler/__init__.py`)
-> commands. `simulator/` stands apart: it imports core only. `daemon/` and `cluster/` share a rank
and never import each other (what both need lives below them). Every import counts: function-level
ones and those under `if TYPE_CHECKING:` (a cycle a checker follows is a cycle of the design), and
so do imports of the root package (nothing below the library API imports `batch_scheduler` itself;
the version comes from core.version).

Inside `job/` the stages rank in the order a request meets them, and the top modules by what they
import (`JOB_RANKS`). Each check prints its whole list; the toy-tree tests at the end show each one
fails on a planted violation.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pathlib
import re
import types

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "batch_scheduler"
RANKS = {"core": 0, "state": 1, "providers": 1, "job": 2, "daemon": 3, "cluster": 3, "": 4, "testing": 4, "commands": 5, "__main__": 6}
APART = {("daemon", "cluster"), ("cluster", "daemon")}  # same rank, and neither imports the other
# job/: observe (the hooks a run reports to, importing nothing) < the stages in pipeline order < the top
# modules: job (a job directory: ledger, inputs, summary) < run and producer (one pass over it, and what it
# sends next) < engine (the runs of a process) and dryrun and cancel (beside it) < outcome (what a run's result means for the job, used by
# the daemon and the cluster alike) and api (the library entry points, over engine and dryrun)
JOB_RANKS = {"observe": 0, "input": 1, "money": 2, "admit": 3, "send": 4, "collect": 5, "view": 6,
             "job": 7, "run": 8, "producer": 8, "engine": 9, "dryrun": 9, "cancel": 9, "outcome": 10, "api": 10}
MAX_LINES = {"job": 400}  # a module of job/ at most; elsewhere MAX_LINES_ELSEWHERE
MAX_LINES_ELSEWHERE = 500
MAX_CLASS_LINES = 400
SQL_HOME = "state"  # the only layer that writes SQL
# statements as the code writes them (keywords in capitals); an HTTP "DELETE" or prose is none of these
SQL = re.compile(r"\bSELECT\s+[\w*(]|\bINSERT\s+(?:OR\s+\w+\s+)?INTO\b|\bUPDATE\s+\w+\s+SET\b|\bDELETE\s+FROM\b"
                 r"|\bCREATE\s+(?:TEMP\w*\s+)?(?:TABLE|(?:UNIQUE\s+)?INDEX|VIEW|TRIGGER)\b")
ALWAYS_EXPORTED = {"__version__"}  # a dunder a package exports anyway (httpx keeps its own list like this)


def module_name(path: pathlib.Path, root: pathlib.Path = PACKAGE) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: pathlib.Path, name: str, modules: set[str]) -> set[str]:
    """The package modules `path` imports, anywhere in it (functions and `if TYPE_CHECKING:` included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
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
    return {m for m in found if m in modules}


def import_graph(root: pathlib.Path = PACKAGE) -> dict[str, set[str]]:
    paths = {module_name(p, root): p for p in root.rglob("*.py")}
    modules = set(paths)
    graph = {}
    for name, path in paths.items():
        deps = imports_of(path, name, modules)
        # a module's own package __init__ runs first anyway: importing it is no edge worth a cycle; the root
        # package is the exception, it is the library API above job/ and daemon/
        graph[name] = {d for d in deps if d != name and (d == root.name or not name.startswith(d + "."))}
    return graph


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def job_rank_of(module: str) -> str | None:
    """A job/ module's place in JOB_RANKS (its stage, or its own name at the top); None outside job/."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "job" else None


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
                bad.append(f"{mod} -> {dep}: {src or 'the package'} is below {dst or 'the package'}")
            elif (src, dst) in APART:
                bad.append(f"{mod} -> {dep}: {src} and {dst} never import each other")
    return bad


def job_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in sorted(graph.items()):
        src = job_rank_of(mod)
        for dep in sorted(deps):
            dst = job_rank_of(dep)
            if src is None or dst is None or src == dst:
                continue
            if JOB_RANKS[src] < JOB_RANKS[dst]:
                bad.append(f"{mod} -> {dep}: job's {src} is below {dst}")
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
    return sorted(found)


def long_modules(root: pathlib.Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        most = MAX_LINES.get(layer_of(name), MAX_LINES_ELSEWHERE)
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > most:
            found.append(f"{name}: {n} lines (at most {most})")
    return found


def long_classes(root: pathlib.Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and (n := node.end_lineno - node.lineno + 1) > MAX_CLASS_LINES:
                found.append(f"{module_name(path, root)}.{node.name}: {n} lines (at most {MAX_CLASS_LINES})")
    return found


def docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (prose, never run)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def sql_outside_state(root: pathlib.Path = PACKAGE) -> list[str]:
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        if layer_of(name) == SQL_HOME:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        prose = docstrings(tree)
        here = []
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose
                    and (m := SQL.search(node.value))):
                here.append((node.lineno, f"{name}:{node.lineno}: {m.group(0).split()[0]} ..."))
        found += [text for _, text in sorted(here)]
    return found


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def top_names(path: pathlib.Path, package: str) -> dict[str, bool]:
    """The names a package's __init__ binds at the top (and under `if TYPE_CHECKING:`: the lazy names its
    `__getattr__` serves), each with whether it is its own: defined there, or imported from inside the
    package (a re-export). A name imported from elsewhere (typing's Any) is a tool, not an offer."""
    names: dict[str, bool] = {}
    body = ast.parse(path.read_text(encoding="utf-8")).body
    body = body + [n for node in body if isinstance(node, ast.If) and is_type_checking(node.test) for n in node.body]
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names[node.name] = True
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update((t.id, True) for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ImportFrom | ast.Import):
            inside = isinstance(node, ast.ImportFrom) and not node.level and f"{node.module}.".startswith(f"{package}.")
            names.update(((a.asname or a.name).split(".")[0], inside) for a in node.names)
    return names


def public_names(path: pathlib.Path, package: str) -> set[str]:
    """What a package's __init__ offers: its own top names (`top_names`) but _private ones."""
    return {n for n, own in top_names(path, package).items() if own and (not n.startswith("_") or n in ALWAYS_EXPORTED)}


def load(path: pathlib.Path, name: str, root: pathlib.Path) -> types.ModuleType:
    """The package itself, or a toy tree's module under a name of its own (never the real one's)."""
    if root == PACKAGE:
        return importlib.import_module(name)
    spec = importlib.util.spec_from_file_location(f"toy_{abs(hash(root))}.{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dishonest_all(root: pathlib.Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(root.rglob("__init__.py")):
        name = module_name(path, root)
        module = load(path, name, root)
        if "__all__" not in vars(module):
            continue
        declared, bound, public = list(module.__all__), top_names(path, name), public_names(path, name)
        found += [f"{name}: {n} is public but not in __all__" for n in sorted(public - set(declared))]
        for n in declared:
            if n in bound and n not in public:
                found.append(f"{name}: __all__ names {n}, which it only imports from outside the package")
            elif n not in bound and not hasattr(module, n):
                found.append(f"{name}: __all__ names {n}, which it does not offer")
        found += [f"{name}: __all__ names {n} twice" for n in sorted(set(declared)) if declared.count(n) > 1]
    return found


def report(found: list) -> str:
    return "\n" + "\n".join(map(str, found))


def test_imports_point_down_the_layers_and_daemon_and_cluster_stay_apart():
    found = violations(import_graph())
    assert found == [], report(found)


def test_inside_job_the_stages_import_only_earlier_stages():
    found = job_violations(import_graph())
    assert found == [], report(found)


def test_no_import_cycle_function_level_and_type_checking_imports_included():
    found = cycles(import_graph())
    assert found == [], report(found)


def test_every_module_is_in_a_known_layer_and_every_job_module_has_a_rank():
    graph = import_graph()
    unknown = {layer_of(m) for m in graph} - set(RANKS) - {"simulator"}
    unranked = {r for m in graph if (r := job_rank_of(m)) is not None} - set(JOB_RANKS)
    assert (unknown, unranked) == (set(), set())


def test_no_module_over_its_size():
    found = long_modules()
    assert found == [], report(found)


def test_no_class_over_400_lines():
    found = long_classes()
    assert found == [], report(found)


def test_no_sql_outside_the_state_layer():
    found = sql_outside_state()
    assert found == [], report(found)


def test_every_package_all_is_its_public_names():
    found = dishonest_all()
    assert found == [], report(found)


def test_the_root_package_all_is_what_it_offers():
    import batch_scheduler

    assert sorted(batch_scheduler.__all__) == sorted(public_names(PACKAGE / "__init__.py", "batch_scheduler"))
    assert all(getattr(batch_scheduler, n) is not None for n in batch_scheduler.__all__)


# -- each check fails on a planted violation ----------------------------------------------------------------


@pytest.fixture
def toy(tmp_path):
    """A package laid out like ours, to show the checks catch what they claim to."""
    pkg = tmp_path / "batch_scheduler"
    for sub in ("core", "state", "job", "job/input", "job/view", "daemon", "cluster", "simulator", "commands"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    return pkg


def test_a_function_level_import_cycle_is_found(toy):
    (toy / "job" / "a.py").write_text("from batch_scheduler.job import b\n")
    (toy / "job" / "b.py").write_text("def f():\n    from batch_scheduler.job.a import x\n")
    assert cycles(import_graph(toy)) == [["batch_scheduler.job.a", "batch_scheduler.job.b"]]


def test_a_type_checking_import_cycle_is_found(toy):
    (toy / "job" / "a.py").write_text("from batch_scheduler.job import b\n")
    (toy / "job" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                      "    from batch_scheduler.job.a import x\n")
    assert cycles(import_graph(toy)) == [["batch_scheduler.job.a", "batch_scheduler.job.b"]]


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


def test_an_import_of_the_root_package_from_below_it_is_a_violation_and_its_cycle_is_found(toy):
    (toy / "__init__.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                     "    from batch_scheduler.job.api import run\n")
    (toy / "job" / "api.py").write_text("from batch_scheduler.core import v\n")
    (toy / "core" / "v.py").write_text("from batch_scheduler import __version__\n")
    graph = import_graph(toy)
    assert violations(graph) == ["batch_scheduler.core.v -> batch_scheduler: core is below the package"]
    assert cycles(graph) == [["batch_scheduler", "batch_scheduler.core.v", "batch_scheduler.job.api"]]


def test_daemon_and_cluster_importing_each_other_is_a_violation(toy):
    (toy / "daemon" / "jobs.py").write_text("def f():\n    from batch_scheduler.cluster.queue import q\n")
    (toy / "cluster" / "queue.py").write_text("")
    (toy / "cluster" / "runner.py").write_text("from batch_scheduler.job import y\n")
    assert violations(import_graph(toy)) == [
        "batch_scheduler.daemon.jobs -> batch_scheduler.cluster.queue: daemon and cluster never import each other"]


def test_an_earlier_stage_importing_a_later_one_is_a_violation(toy):
    (toy / "job" / "input" / "reader.py").write_text("from batch_scheduler.job.view.status import s\n")
    (toy / "job" / "view" / "status.py").write_text("from batch_scheduler.job.input.reader import r\n")
    (toy / "job" / "run.py").write_text("from batch_scheduler.job.view import status\n")
    assert job_violations(import_graph(toy)) == [
        "batch_scheduler.job.input.reader -> batch_scheduler.job.view.status: job's input is below view"]


def test_a_long_job_module_and_a_long_class_are_found(toy):
    (toy / "job" / "run.py").write_text("x = 1\n" * 401)
    (toy / "daemon" / "server.py").write_text("x = 1\n" * 401)  # 500 outside job/
    (toy / "state" / "sqlite.py").write_text("class Ledger:\n" + "    x = 1\n" * 400)
    assert long_modules(toy) == ["batch_scheduler.job.run: 401 lines (at most 400)"]
    assert long_classes(toy) == ["batch_scheduler.state.sqlite.Ledger: 401 lines (at most 400)"]


def test_a_planted_sql_string_outside_state_is_found(toy):
    (toy / "job" / "run.py").write_text(
        '"""A docstring may say SELECT id FROM chunks."""\n'
        'METHOD = "DELETE"  # an HTTP method\n'
        'def f(db):\n    db.execute("SELECT id FROM chunks WHERE job_id=?")\n'
        '    db.execute(f"UPDATE chunks SET state={1}")\n')
    (toy / "state" / "sqlite.py").write_text('Q = "INSERT INTO chunks VALUES (?)"\n')
    assert sql_outside_state(toy) == ["batch_scheduler.job.run:4: SELECT ...", "batch_scheduler.job.run:5: UPDATE ..."]


def test_an_all_that_is_not_the_public_names_is_found(toy):
    (toy / "core" / "version.py").write_text('__version__ = "1"\n')
    (toy / "job" / "api.py").write_text("def run(): pass\n")
    (toy / "__init__.py").write_text(
        "from typing import TYPE_CHECKING, Any\n"
        "from batch_scheduler.core.version import __version__\n"
        "if TYPE_CHECKING:\n    from batch_scheduler.job.api import run\n"
        '__all__ = ["Any", "__version__", "gone"]\n'
        "def helper(): pass\n")
    assert dishonest_all(toy) == [
        "batch_scheduler: helper is public but not in __all__",
        "batch_scheduler: run is public but not in __all__",
        "batch_scheduler: __all__ names Any, which it only imports from outside the package",
        "batch_scheduler: __all__ names gone, which it does not offer",
    ]
