"""The command line as a user meets it: exit codes, one clear line, status, cancel, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from batch_scheduler.commands.main import main
from batch_scheduler.simulator.process import SimulatorProcess

from ..helpers import ids_of, read_results, write_requests

KEY = "sk-cli-test-key-42"


@pytest.fixture(scope="module")
def sim():
    with SimulatorProcess(["--keys", f"{KEY},sk-other"]) as s:
        yield s


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.delenv("CLAUDE_API_KEY", raising=False)
    return tmp_path


def wait_until(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def run_args(sim, inp, out, *extra):
    return ["run", str(inp), "--out", str(out), "--base-url", sim.url, "--poll-min", "0.02", "--poll-max",
            "0.1", "--batch-size", "50", *extra]


def test_run_exits_0_and_says_what_it_did(sim, env, capsys):
    ids = write_requests(env / "in.jsonl", 120)
    assert main(run_args(sim, env / "in.jsonl", env / "out")) == 0
    err = capsys.readouterr().err
    assert "120 of 120 requests finished (120 succeeded, 0 errored, 0 expired), 0 rejected" in err
    assert sorted(ids_of(read_results(str(env / "out")))) == ids


def test_no_key_is_a_usage_error(sim, env, monkeypatch, capsys):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    write_requests(env / "in.jsonl", 5)
    assert main(run_args(sim, env / "in.jsonl", env / "out")) == 2
    assert capsys.readouterr().err.strip() == (
        "batch-scheduler: no API key: set ANTHROPIC_API_KEY (or CLAUDE_API_KEY), or ANTHROPIC_AUTH_TOKEN in the "
        "environment or in .env")


def test_dotenv_supplies_the_key_and_the_environment_wins(sim, env, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    (env / ".env").write_text(f"CLAUDE_API_KEY={KEY}\n")
    write_requests(env / "in.jsonl", 5)
    assert main(run_args(sim, env / "in.jsonl", env / "out")) == 0
    monkeypatch.setenv("CLAUDE_API_KEY", "sk-wrong")
    write_requests(env / "in2.jsonl", 5)
    assert main(run_args(sim, env / "in2.jsonl", env / "out2")) == 3


def test_refused_key_exits_3_with_one_line_and_no_key_anywhere(sim, env, monkeypatch, capsys):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-rotated-away-0000")
    write_requests(env / "in.jsonl", 60)
    assert main(run_args(sim, env / "in.jsonl", env / "out")) == 3
    err = capsys.readouterr().err
    assert "the API refused the key (HTTP 401)" in err
    assert "sk-rotated-away-0000" not in err
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    assert main(run_args(sim, env / "in.jsonl", env / "out")) == 0
    assert len(read_results(str(env / "out"))) == 60
    for root, _, files in os.walk(env / "out"):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                assert b"sk-rotated-away-0000" not in f.read()


def test_status_reports_the_job(sim, env, capsys):
    write_requests(env / "in.jsonl", 75)
    assert main(run_args(sim, env / "in.jsonl", env / "out")) == 0
    capsys.readouterr()
    assert main(["status", str(env / "out"), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["state"] == "done"
    assert st["requests"] == {"accepted": 75, "finished": 75, "to_go": 0, "waiting_retry": 0,
                              "canceled_parked": 0, "refused_by_api": 0, "in_failed_batches": 0}
    assert st["chunks_by_state"] == {"collected": 2}
    assert st["batches_in_flight"] == []
    assert st["queue"] == {"unit": "requests", "hard_cap": None, "queue_full_answers": 0, "token_limit_failures": 0,
                           "queues": {"requests": {"queued": 0, "limit": 200_000, "stated": None}}}
    assert main(["status", str(env / "out")]) == 0
    out = capsys.readouterr().out
    assert "requests: 75 accepted, 75 finished, 0 to go" in out
    assert ("provider queue: 0 requests queued of a limit of 200,000; 0 queue-full answer(s), 0 token-limit "
            "failure(s)") in out


def test_resume_needs_only_the_directory(sim, env, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_BASE_URL", sim.url)  # where the key is configured to go: the ledger agrees
    ids = write_requests(env / "in.jsonl", 80)
    assert main(run_args(sim, env / "in.jsonl", env / "out", "--shards", "3")) == 0
    assert main(["resume", str(env / "out")]) == 0
    assert sorted(ids_of(read_results(str(env / "out")))) == ids
    assert len(os.listdir(env / "out" / "results")) == 3


def test_files_the_job_writes_are_owner_only(sim, env):
    write_requests(env / "in.jsonl", 10)
    assert main(run_args(sim, env / "in.jsonl", env / "out")) == 0
    for root, dirs, files in os.walk(env / "out"):
        for name in dirs + files:
            assert os.stat(os.path.join(root, name)).st_mode & 0o077 == 0, name


def test_cancel_stops_new_batches_and_retry_cancelled_finishes(env, monkeypatch):
    ids = write_requests(env / "in.jsonl", 600)
    with SimulatorProcess(["--processing-s", "30"]) as slow:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", slow.url)  # `cancel DIR` sends the key where it is configured
        args = run_args(slow, env / "in.jsonl", env / "out", "--concurrency", "2")
        proc = subprocess.Popen([sys.executable, "-m", "batch_scheduler", *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env={**os.environ})
        wait_until(lambda: slow.stats()["creates"] >= 2)
        assert main(["cancel", str(env / "out")]) == 0
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 1
        assert b"the job was cancelled" in err
        creates = slow.stats()["creates"]
        assert creates == 2
        assert main(args) == 1  # still cancelled: nothing new is sent
        assert slow.stats()["creates"] == creates
        slow.set_config(processing_s=0)
        assert main([*args, "--retry-cancelled"]) == 0
    assert sorted(ids_of(read_results(str(env / "out")))) == ids


@pytest.mark.parametrize(("extra", "message"), [
    (["--max-queued-requests", "0"], "--max-queued-requests 0: must be at least 1"),
    (["--max-queued-requests", "-5"], "--max-queued-requests -5: must be at least 1"),
    (["--max-queued-requests", "600000"],
     "--max-queued-requests 600,000: provider anthropic allows at most 500,000 requests in its queue (its highest tier)"),
    (["--provider", "openai", "--max-enqueued-tokens", "20000000000"],
     "--max-enqueued-tokens 20,000,000,000: provider openai allows at most 15,000,000,000 tokens in its queue "
     "(its highest tier)"),
    (["--provider", "openai", "--max-queued-requests", "5000"],
     "--max-queued-requests: provider openai limits tokens in its queue, not requests; use --max-enqueued-tokens"),
])
def test_a_queue_cap_out_of_range_is_a_usage_error_naming_the_limit(sim, env, monkeypatch, capsys, extra, message):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    write_requests(env / "in.jsonl", 5)
    assert main(run_args(sim, env / "in.jsonl", env / "out", *extra)) == 2
    assert capsys.readouterr().err.strip() == f"batch-scheduler: {message}"
    assert not (env / "out").exists()
