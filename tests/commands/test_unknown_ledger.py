"""A ledger that does not know the results next to it (missing, emptied, or without its -wal) is refused, not
taken for a new job that would pay for everything again; the WAL is checkpointed so ledger.db alone knows the job."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import pytest

from batch_scheduler.commands.main import main
from batch_scheduler.simulator.process import SimulatorProcess

from ..helpers import ids_of, read_results, write_requests

KEY = "sk-unknown-ledger-key"
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.delenv("CLAUDE_API_KEY", raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def sim():
    with SimulatorProcess() as s:
        yield s


def wait_until(condition, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def args_for(sim, env, *extra):
    return ["run", str(env / "in.jsonl"), "--out", str(env / "out"), "--base-url", sim.url, "--poll-min", "0.02",
            "--poll-max", "0.1", "--batch-size", "50", *extra]


@pytest.mark.parametrize("damage", ["emptied", "removed", "older"])
def test_results_next_to_an_empty_or_missing_ledger_are_refused(sim, env, monkeypatch, capsys, damage):
    monkeypatch.setenv("ANTHROPIC_BASE_URL", sim.url)
    write_requests(env / "in.jsonl", 120)
    out = env / "out"
    assert main(args_for(sim, env)) == 0
    shards = sum(p.stat().st_size for p in (out / "results").iterdir())
    here = f"{shards:,} bytes of results, a summary of 120 finished requests"
    if damage == "emptied":
        (out / "ledger.db").write_bytes(b"")  # `: > out/ledger.db`
    elif damage == "removed":
        (out / "ledger.db").unlink()
    else:  # a copy from before any batch was collected
        db = sqlite3.connect(out / "ledger.db")
        db.execute("DELETE FROM counters")
        db.commit()
        db.close()
        here = "summary.json counts 120 finished requests, the ledger 0"
    creates = sim.stats()["creates"]
    capsys.readouterr()
    want = (f"batch-scheduler: {out} holds results its ledger.db does not know ({here}): the ledger is missing, empty, or lost its ledger.db-wal file. "
            f"Running would send everything again and pay for it twice; put the job's ledger.db (and "
            f"ledger.db-wal) back, or move results/ and summary.json away to start afresh")
    assert main(args_for(sim, env)) == 2
    assert capsys.readouterr().err.strip() == want
    assert main(["resume", str(out)]) == 2
    assert capsys.readouterr().err.strip() == want
    assert sim.stats()["creates"] == creates
    assert (out / "ledger.db").exists() == (damage != "removed")  # none is made where none was
    assert len(read_results(str(out))) == 120


def test_a_killed_run_whose_wal_file_is_lost_carries_on_from_ledger_db_alone(env):
    ids = write_requests(env / "in.jsonl", 200)
    out = env / "out"
    with SimulatorProcess(["--processing-s", "0.5"]) as sim:
        proc = subprocess.Popen([sys.executable, "-m", "batch_scheduler", *args_for(sim, env, "--concurrency", "1")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: sim.stats()["creates"] >= 3)  # one batch at a time: two are collected
            retrieves = sim.stats()["retrieves"]
            wait_until(lambda: sim.stats()["retrieves"] > retrieves)  # the third is recorded, and polled
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for side in ("-wal", "-shm"):
            if os.path.exists(f"{out}/ledger.db{side}"):
                os.unlink(f"{out}/ledger.db{side}")
        assert main(args_for(sim, env)) == 0
        assert sim.stats()["requests_created"] == 200, "no batch sent twice"
    got = ids_of(read_results(str(out)))
    assert sorted(got) == ids and max(Counter(got).values()) == 1
