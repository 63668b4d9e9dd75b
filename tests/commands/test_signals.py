"""`run` stops on SIGTERM and SIGHUP as on SIGINT: the summary written, one line naming the signal and the exit
code (128 + its number), everything kept for the same command to resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from batch_scheduler.simulator.process import SimulatorProcess

from ..helpers import write_requests

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def slow():
    with SimulatorProcess(["--processing-s", "60"]) as s:
        yield s


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)],
                         ids=["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_signal_stops_the_run_with_a_summary_and_an_exit_code_of_its_own(slow, tmp_path, sig, code):
    write_requests(tmp_path / "in.jsonl", 200)
    out = tmp_path / "out"
    creates = slow.stats()["creates"]
    env = {**os.environ, "ANTHROPIC_API_KEY": "sk-signals-key-0042"}
    proc = subprocess.Popen([sys.executable, "-m", "batch_scheduler", "run", str(tmp_path / "in.jsonl"), "--out",
                             str(out), "--base-url", slow.url, "--poll-min", "0.05", "--poll-max", "0.1",
                             "--batch-size", "50", "--concurrency", "2"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 30
        while slow.stats()["creates"] < creates + 2:
            assert time.monotonic() < deadline and proc.poll() is None, "the run did not send"
            time.sleep(0.02)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    counts, last = err.strip().splitlines()[-2:]
    assert re.fullmatch(r"0 of [\d,]+ requests finished \(0 succeeded, 0 errored, 0 expired\), 0 rejected; .*", counts)
    assert last == (f"batch-scheduler: stopped by {sig.name} (exit {code}); nothing is lost: run the same command "
                    f"again to resume")
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["state"], summary["message"]) == ("incomplete", "stopped; resumes where it was")
    assert "Traceback" not in err
