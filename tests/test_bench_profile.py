"""Smoke test of `python -m bench profile`: a tiny run gives the scheduler's CPU beside wall time and a table
of functions sorted by their own CPU time. A profile, never a timed test: nothing here asserts a speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N = 2_000


def test_bench_profile_writes_the_cpu_seconds_and_a_sorted_table(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "profile", "--requests", str(N), "--batch-size", "500", "--poll-min", "0.02",
         "--profiler", "cprofile", "--top", "40", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    table = (tmp_path / "out" / f"profile-{N}.txt").read_text()
    first, plain, profiled = table.splitlines()[:3]
    assert first.startswith(f"# bench profile: {N:,} requests")
    assert plain.strip().startswith("none: scheduler CPU") and "wall" in plain and "simulator CPU" in plain
    assert profiled.strip().startswith("cprofile: scheduler CPU")
    assert "sorted by tottime" in table and "sorted by cumulative" in table
    assert "_collect_once" in table and "cut_chunks" in table  # the pipeline's stages are in it
    assert (tmp_path / "out" / f"profile-{N}.pstats").stat().st_size > 0
