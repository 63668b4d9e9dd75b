"""One owner per job: a second run or resume on a running job is refused at once; a killed one blocks nothing."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from batch_scheduler.commands.main import main
from batch_scheduler.core.joblock import JobLock
from batch_scheduler.simulator.process import SimulatorProcess
from batch_scheduler.state.ledger.sqlite import Ledger

from ..helpers import ids_of, read_results, write_requests

KEY = "sk-one-owner-key-42"
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.delenv("CLAUDE_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    return tmp_path


def wait_until(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_a_second_run_or_resume_is_refused_while_one_runs_and_a_killed_one_blocks_nothing(env, capsys):
    ids = write_requests(env / "in.jsonl", 200)
    out = env / "out"
    with SimulatorProcess(["--processing-s", "5"]) as sim:  # ends while the test runs, not before it checks
        args = ["run", str(env / "in.jsonl"), "--out", str(out), "--base-url", sim.url, "--poll-min", "0.02",
                "--poll-max", "0.1", "--batch-size", "50", "--concurrency", "2"]
        first = subprocess.Popen([sys.executable, "-m", "batch_scheduler", *args], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: sim.stats()["creates"] >= 2)
            holder = (rf"batch-scheduler run \(pid {first.pid} on [^,]+, since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\)")
            capsys.readouterr()
            assert main(args) == 2
            err = capsys.readouterr().err.strip()
            assert re.fullmatch(rf"batch-scheduler: {re.escape(str(out))} is in use: {holder} holds it; wait for "
                                rf"that to end \(or stop it\), then run again", err), err
            assert main(["resume", str(out), "--trust-ledger-url"]) == 2
            assert "is in use: batch-scheduler run (pid " in capsys.readouterr().err
            assert sim.stats()["creates"] == 2, "the refused ones sent nothing"
            assert not (out / "summary.json").exists(), "and wrote nothing"
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
        sim.set_config(processing_s=0)
        assert main(args) == 0  # the dead process's lock holds nothing
    got = ids_of(read_results(str(out)))
    assert sorted(got) == ids and max(Counter(got).values()) == 1


def test_cancel_goes_along_with_a_running_job_but_not_with_another_cancel(env, capsys):
    out = env / "out"
    out.mkdir()
    Ledger(str(out / "ledger.db")).close()
    with JobLock.take(str(out), "batch-scheduler cancel"):
        assert main(["cancel", str(out)]) == 2
        assert "is in use: batch-scheduler cancel (pid " in capsys.readouterr().err
    with JobLock.take(str(out), "batch-scheduler run"):
        assert main(["cancel", str(out)]) == 0  # how a running job is told: the mark in its ledger
        assert capsys.readouterr().out.startswith(f"cancelled {out}: batch-scheduler run (pid {os.getpid()} on ")
    ledger = Ledger(str(out / "ledger.db"), readonly=True)
    try:
        assert ledger.read_meta()["cancelled"] is True
    finally:
        ledger.close()
