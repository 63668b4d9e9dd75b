"""`run --metrics-file PATH`: the run's metrics in Prometheus' text format, for node_exporter's
textfile collector; a directory that cannot take the file is refused before anything is sent."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from batch_scheduler.commands.main import main
from batch_scheduler.simulator.process import SimulatorProcess

from ..helpers import write_requests

KEY = "sk-metrics-file-key-7"


@pytest.fixture(scope="module")
def sim():
    with SimulatorProcess(["--keys", KEY]) as s:
        yield s


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.delenv("CLAUDE_API_KEY", raising=False)
    return tmp_path


def run_args(sim, inp, out, *extra):
    return ["run", str(inp), "--out", str(out), "--base-url", sim.url, "--poll-min", "0.02", "--poll-max",
            "0.1", "--batch-size", "50", *extra]


def test_the_metrics_file_holds_the_runs_counts_histograms_and_process(sim, env):
    write_requests(env / "in.jsonl", 120)
    prom = env / "textfile" / "batch.prom"
    prom.parent.mkdir()
    assert main(run_args(sim, env / "in.jsonl", env / "out", "--metrics-file", str(prom))) == 0
    fams = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams.values() for s in f.samples}
    assert values[("batch_scheduler_run_exit_code", ())] == 0
    assert values[("batch_scheduler_requests", (("state", "succeeded"),))] == 120
    assert values[("batch_scheduler_jobs", (("state", "done"),))] == 1
    assert values[("batch_scheduler_http_calls_total", (("endpoint", "create"), ("status", "200")))] == 3
    assert values[("batch_scheduler_batch_turnaround_seconds_count", ())] == 3
    assert values[("batch_scheduler_results_durable_delay_seconds_count", ())] == 3
    assert values[("batch_scheduler_http_call_duration_seconds_count",
                   (("endpoint", "create"), ("status", "200")))] == 3
    assert "process_resident_memory_bytes" in fams
    assert "batch_scheduler_up" not in fams and "batch_scheduler_slots" not in fams  # a run is no daemon
    assert [p.name for p in prom.parent.iterdir()] == ["batch.prom"]  # written aside and renamed in


def test_a_metrics_file_in_a_missing_directory_is_refused_before_the_run(sim, env, capsys):
    write_requests(env / "in.jsonl", 5)
    code = main(run_args(sim, env / "in.jsonl", env / "out", "--metrics-file", str(env / "nope" / "x.prom")))
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        f"batch-scheduler: --metrics-file {env / 'nope' / 'x.prom'}: no directory {env / 'nope'}")
    assert not (env / "out").exists()
