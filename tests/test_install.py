"""README's Install section, tried as a new user would: build the wheel, install it in a fresh virtual
environment (the core alone, then with each extra), and use what each one promises.

Each venv gets only the wheel and what pip resolves for it from the package index (pip's cache makes a
second run fast); the checks run the installed `batch-scheduler`, never this checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(900)

# a job against the simulator, then an export: what `pip install .` must be enough for
USE = textwrap.dedent("""
    import json, os, sys
    from batch_scheduler.commands.main import main
    from batch_scheduler.simulator.process import SimulatorProcess

    work = sys.argv[1]
    with open(os.path.join(work, "in.jsonl"), "w") as f:
        for i in range(30):
            f.write(json.dumps({"custom_id": f"r{i}", "params": {"model": "claude-sonnet-4-5", "max_tokens": 5,
                                "messages": [{"role": "user", "content": "hi"}]}}) + "\\n")
    os.environ["ANTHROPIC_API_KEY"] = "sk-install-test"
    with SimulatorProcess(["--processing-s", "0"]) as sim:
        code = main(["run", os.path.join(work, "in.jsonl"), "--out", os.path.join(work, "out"),
                     "--base-url", sim.url, "--poll-min", "0.05", "--poll-max", "0.2"])
    assert code == 0, code
    sys.exit(main(["export", os.path.join(work, "out"), "-o", os.path.join(work, sys.argv[2])]))
""")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(ROOT)],
                   check=True, capture_output=True)
    (found,) = dist.glob("batch_scheduler-*.whl")
    return found


def fresh_venv(where: Path, wheel: Path, extra: str) -> Path:
    """A new venv holding the wheel (with `extra`) and what pip resolves for it. pip itself is this test run's,
    pointed at the new venv (`pip --python`): the same resolution and install, without seeding pip into every
    venv and compiling every installed module (about 15 s of each 20)."""
    venv.EnvBuilder(with_pip=False).create(where)
    python = where / "bin" / "python"
    target = f"{wheel}[{extra}]" if extra else str(wheel)
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-compile",
                           "--disable-pip-version-check", target], capture_output=True, text=True, env=clean_env())
    assert done.returncode == 0, done.stderr[-2000:]
    return python


def clean_env() -> dict[str, str]:
    """The environment without a path to this checkout (pip would take it for an installed copy)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def run_in(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), *args], capture_output=True, text=True, cwd=cwd, env=clean_env())


def test_the_core_wheel_runs_a_job_and_names_the_extra_a_feature_needs(wheel, tmp_path):
    python = fresh_venv(tmp_path / "venv", wheel, "")
    version = run_in(python.parent / "batch-scheduler", "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("batch-scheduler "), version.stderr
    # it is the wheel that runs, not this checkout
    where = run_in(python, "-c", "import batch_scheduler; print(batch_scheduler.__file__)", cwd=tmp_path)
    assert str(tmp_path / "venv") in where.stdout
    used = run_in(python, "-c", USE, str(tmp_path), "answers.csv", cwd=tmp_path)
    assert used.returncode == 0, used.stderr[-2000:]
    assert len((tmp_path / "answers.csv").read_text().splitlines()) == 31  # a header and 30 rows
    parquet = run_in(python.parent / "batch-scheduler", "export", str(tmp_path / "out"), "-o",
                     str(tmp_path / "a.parquet"), cwd=tmp_path)
    assert parquet.returncode == 2 and "batch-scheduler[parquet]" in parquet.stderr, parquet.stderr
    bucket = run_in(python.parent / "batch-scheduler", "run", str(tmp_path / "in.jsonl"), "--out", "s3://b/x",
                    cwd=tmp_path)
    assert bucket.returncode == 2 and "batch-scheduler[cluster]" in bucket.stderr, bucket.stderr


def test_the_parquet_extra_exports_parquet(wheel, tmp_path):
    python = fresh_venv(tmp_path / "venv", wheel, "parquet")
    used = run_in(python, "-c", USE, str(tmp_path), "answers.parquet", cwd=tmp_path)
    assert used.returncode == 0, used.stderr[-2000:]
    rows = run_in(python, "-c", f"import pyarrow.parquet as pq; print(pq.read_table({str(tmp_path / 'answers.parquet')!r}).num_rows)",
                  cwd=tmp_path)
    assert rows.stdout.strip() == "30", rows.stderr


def test_the_cluster_extra_reaches_for_postgresql(wheel, tmp_path):
    python = fresh_venv(tmp_path / "venv", wheel, "cluster")
    # nothing listens on port 1: the extra is there, so the error is about the server, not the install
    status = run_in(python.parent / "batch-scheduler", "status", "--ledger", "postgresql://nobody@127.0.0.1:1/x",
                    cwd=tmp_path)
    assert status.returncode != 0
    assert "batch-scheduler[cluster]" not in status.stderr and "127.0.0.1:1" in status.stderr, status.stderr
    assert "Traceback" not in status.stderr
    # the node's own modules are in the wheel (a node is `daemon --ledger`)
    node = run_in(python, "-c", "import batch_scheduler.cluster.node, batch_scheduler.state.ledger.queries; print('ok')",
                  cwd=tmp_path)
    assert node.stdout.strip() == "ok", node.stderr[-2000:]


def test_the_tiktoken_extra_installs_tiktoken(wheel, tmp_path):
    python = fresh_venv(tmp_path / "venv", wheel, "tiktoken")
    found = run_in(python, "-c", "import tiktoken, batch_scheduler; print('ok')", cwd=tmp_path)
    assert found.stdout.strip() == "ok", found.stderr


# the other extras: each installs into a fresh venv and brings what its feature imports
EXTRA_USES = {
    "pandas": "import batch_scheduler, pandas, pyarrow; assert callable(batch_scheduler.to_pandas)",
    "polars": "import batch_scheduler, polars, pyarrow; assert callable(batch_scheduler.to_polars)",
    "structured": "import batch_scheduler, pydantic",
    "notebook": "import batch_scheduler, tqdm, ipywidgets",
    "vertex": "import batch_scheduler.providers.google.gcp_auth, google.auth",
    "bedrock": "import batch_scheduler.providers.aws.access, botocore.auth",
}


@pytest.mark.parametrize("extra", list(EXTRA_USES))
def test_each_other_extra_installs_what_its_feature_imports(wheel, tmp_path, extra):
    python = fresh_venv(tmp_path / "venv", wheel, extra)
    used = run_in(python, "-c", EXTRA_USES[extra] + "; print('ok')", cwd=tmp_path)
    assert used.stdout.strip() == "ok", used.stderr[-2000:]
