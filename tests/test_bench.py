"""Smoke test of `python -m bench`: a tiny size through every program gives the table, targets and JSON.

A benchmark, never a timed test: nothing here asserts a speed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from bench import measure, metrics

ROOT = Path(__file__).resolve().parents[1]
N = 2_000


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    pytest.importorskip("anthropic", reason="the bench extras are not installed: pip install -e '.[bench]'")
    tmp = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--sizes", str(N), "--batch-size", "500", "--concurrency", "4",
         "--poll-min", "0.02", "--out", str(tmp / "results"), "--work", str(tmp / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    return done, tmp


def test_bench_runs_every_program_and_exits_0(bench_run) -> None:
    done, _ = bench_run
    assert done.returncode == 0, done.stderr[-3000:]


def test_bench_prints_a_row_per_program_and_the_targets(bench_run) -> None:
    out = bench_run[0].stdout
    for label in ("| 2,000 | scheduler |", "| 2,000 | floor (a) |", "| 2,000 | SDK obvious (b) |",
                  "| 2,000 | article (c) |", "### targets"):
        assert label in out, out
    assert any(ln.startswith("| N |") and ln.endswith("| exact |") for ln in out.splitlines()), out


def test_bench_json_holds_raw_numbers_and_machine_info(bench_run) -> None:
    _, tmp = bench_run
    (path,) = (tmp / "results").glob("*.json")
    data = orjson.loads(path.read_bytes())
    assert data["machine"]["nproc"] >= 1 and data["machine"]["python"]
    row = data["sizes"][str(N)]
    for program in ("scheduler", "floor", "sdk", "article"):
        rec = row[program]
        assert rec["ok"] and rec["exact"]["exact"], rec
        assert rec["throughput_rps"] > 0 and rec["peak_rss_bytes"] > 0 and rec["cpu_s"] >= 0
    sched = row["scheduler"]
    assert sched["batches"] == N // 500
    assert sched["delay_s"]["n"] == N // 500 and sched["delay_s"]["p95"] is not None
    assert sched["poll_calls_per_batch"] is not None
    assert {t["result"] for t in data["targets"]} <= {"PASS", "MISS", "n/a"}
    assert list((tmp / "results").glob("*.png"))


def test_bench_skips_baselines_over_baseline_max(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--sizes", "300", "--batch-size", "100", "--poll-min", "0.02",
         "--baseline-max", "200", "--out", str(tmp_path / "results"), "--work", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| 300 | SDK obvious (b) | skipped (over --baseline-max) |" in done.stdout
    assert "| 300 | article (c) | skipped (over --baseline-max) |" in done.stdout


def test_repeated_runs_take_turns_so_a_slow_spell_touches_every_program(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--sizes", "300", "--batch-size", "100", "--poll-min", "0.02",
         "--skip-baselines", "--repeat", "2", "--out", str(tmp_path / "results"), "--work", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    started = [ln for ln in done.stderr.splitlines() if ln.startswith("bench: ") and ln.endswith(" ...")]
    assert started == ["bench: scheduler on 300 requests, round 1 of 2 ...", "bench: floor on 300 requests, round 1 of 2 ...",
                       "bench: scheduler on 300 requests, round 2 of 2 ...", "bench: floor on 300 requests, round 2 of 2 ..."]
    (path,) = (tmp_path / "results").glob("*.json")
    row = orjson.loads(path.read_bytes())["sizes"]["300"]
    assert list(row) == ["input_bytes", "scheduler", "floor", "sdk", "article"]
    for program in ("scheduler", "floor"):
        assert len(row[program]["repeats_rps"]) == 2 and row[program]["exact"]["exact"], row[program]


def test_exactness_check_names_duplicates_and_missing_ids(tmp_path: Path) -> None:
    f = tmp_path / "r.jsonl"
    f.write_bytes(b'{"custom_id":"article-0000000","result":{}}\n{"custom_id":"article-0000000","result":{}}\n'
                  b'{"custom_id": "other", "result": {}}\n')
    e = metrics.check_exact([str(f)], 2)
    assert (e.lines, e.unique, e.duplicates, e.missing, e.foreign, e.exact) == (3, 1, 1, 1, 1, False)


def test_fallback_measurement_reports_cpu_and_peak_rss(tmp_path: Path) -> None:
    grow = "x = bytearray(64 << 20); sum(range(3_000_000))"
    m = measure.run([sys.executable, "-c", grow], log_dir=str(tmp_path), name="grow", force_fallback=True)
    assert m.returncode == 0 and m.method.startswith("getrusage")
    assert m.peak_rss_bytes >= 64 << 20 and m.cpu_s > 0


def test_provider_bound_bench_reports_each_scenario_against_its_limit(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "provider-bound", "--requests", "3000", "--limits", "1000",
         "--openai-requests", "2000", "--batch-s", "0.3", "--out", str(tmp_path / "results"),
         "--work", str(tmp_path / "work")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| anthropic-1k | 3,000 | 1,000 requests |" in done.stdout and "| openai | 2,000 |" in done.stdout
    (path,) = (tmp_path / "results").glob("*-provider-bound.json")
    runs = {r["scenario"]: r for r in orjson.loads(path.read_bytes())["runs"]}
    anthropic = runs["anthropic-1k"]
    assert anthropic["ok"] and anthropic["exact"]["exact"] and anthropic["peak_queued"] <= 1_000
    assert anthropic["summary"]["queue"]["limits"]["requests"]["stated"] == 1_000  # learned from the 429
    assert runs["openai"]["ok"] and runs["openai"]["unit"] == "tokens"


def test_the_targets_compare_cpu_seconds_with_the_sdk_and_the_floor_as_well_as_throughput() -> None:
    from bench.report import targets

    def rec(rps: float, cpu: float) -> dict:
        return {"ok": True, "throughput_rps": rps, "cpu_s": cpu, "peak_rss_bytes": 100 << 20}

    def result(sdk_cpu: float, floor_cpu: float) -> dict[str, str]:
        data = {"options": {"poll_min_s": 0.05}, "sizes": {
            "200000": {"scheduler": rec(50_000, 3.0), "sdk": rec(8_000, sdk_cpu), "floor": rec(200_000, floor_cpu)}}}
        return {t["target"]: t["result"] for t in targets(data)}

    sdk = ">= 10x the SDK baseline's CPU seconds at 200,000 requests"
    floor = "scheduler CPU seconds within 3x of the floor's (largest N)"
    assert result(sdk_cpu=30.0, floor_cpu=1.0)[sdk] == "PASS"
    assert result(sdk_cpu=29.0, floor_cpu=1.0)[sdk] == "MISS"
    assert result(sdk_cpu=30.0, floor_cpu=1.0)[floor] == "PASS"
    assert result(sdk_cpu=30.0, floor_cpu=0.9)[floor] == "MISS"
