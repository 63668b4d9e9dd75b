"""The daemon as an operator starts and stops it: SIGTERM and a restart, exactly once; refusing to start."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batch_scheduler.commands.main import main
from batch_scheduler.core.errors import ExitCode
from batch_scheduler.core.settings import load_environment
from batch_scheduler.daemon.server import Daemon, DaemonConfig
from batch_scheduler.simulator.process import SimulatorProcess

from .helpers import (
    KEY,
    ROOT,
    assert_exactly_once,
    drop,
    job_flags,
    running_daemon,
    state,
    summary,
    until,
    wait_until,
)

pytestmark = pytest.mark.timeout(20)


# -- staying up: SIGTERM, restart, exactly once ----------------------------------------------------

def start_daemon_process(spool: Path, sim_url: str, workdir: Path, log_path: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("CLAUDE_API_KEY", "BATCH_DAEMON_TOKEN")}
    env["ANTHROPIC_API_KEY"] = KEY
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "batch_scheduler", "daemon", "--spool", str(spool), "--listen", "127.0.0.1:0",
           "--base-url", sim_url, "--batch-size", "25", "--concurrency", "4", "--poll-min", "0.05",
           "--poll-max", "0.1", "--shards", "4", "--inbox-poll-s", "0.05"]
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                                stderr=log_file)
    wait_until(lambda: b"listening on" in log_path.read_bytes() or proc.poll() is not None, "daemon listening")
    assert proc.poll() is None, log_path.read_text()
    return proc


def test_three_jobs_stopped_by_sigterm_finish_after_a_restart_each_request_exactly_once(tmp_path):
    spool, log_path = tmp_path / "spool", tmp_path / "daemon.log"
    with SimulatorProcess(["--keys", KEY, "--processing-s", "0.4"]) as sim:
        assert sim.url is not None
        proc = start_daemon_process(spool, sim.url, tmp_path, log_path)
        try:
            ids = {name: drop(spool, name, 150) for name in ("a", "b", "c")}
            wait_until(lambda: sim.stats()["creates"] >= 4, "first batches created")
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=15)
            stop_s = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        print(f"SIGTERM -> exit: {stop_s:.2f} s")
        assert code == ExitCode.OK, log_path.read_text()
        assert stop_s < 10
        states = {name: state(spool, name) for name in ids}
        assert "queued" in states.values(), f"the stop did not land in the middle: {states}"
        assert set(states.values()) <= {"queued", "done"}
        interrupted = next(n for n, s in states.items() if s == "queued")
        assert summary(spool, interrupted)["reason"] == ("the daemon stopped; the job resumes where it was at "
                                                         "the next start")

        proc = start_daemon_process(spool, sim.url, tmp_path, log_path)
        try:
            wait_until(lambda: all(state(spool, n) == "done" for n in ids), "all three jobs done")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == ExitCode.OK
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name, want in ids.items():
        assert_exactly_once(spool, name, want)
        assert not (spool / "inbox" / f"{name}.jsonl").exists()
    assert KEY not in log_path.read_text()


async def test_in_process_sigterm_stops_running_jobs_in_time_and_they_resume(sim, env_dir, tmp_path):
    spool = tmp_path / "spool"
    async with running_daemon(spool, env_dir, job_flags(sim.url)) as run:
        ids = drop(spool, "job", 200)
        await until(lambda: sim.stats["creates"] >= 2, "batches created")
        assert await run.stop() == ExitCode.OK
    assert run.daemon.stop_took_s is not None and run.daemon.stop_took_s < 10
    assert state(spool, "job") == "queued"
    # restarted with another default batch size: the started job keeps the one it was cut with
    async with running_daemon(spool, env_dir, job_flags(sim.url, batch_size=30)):
        await until(lambda: state(spool, "job") == "done", "job done after restart")
    assert_exactly_once(spool, "job", ids)


# -- refusing to start -----------------------------------------------------------------------------

@pytest.fixture
def root_logging():
    """cli.main sets up logging on the root logger: put it back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_listening_beyond_loopback_without_a_token_refuses_to_start(tmp_path, monkeypatch, capsys, root_logging):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BATCH_DAEMON_TOKEN", raising=False)
    code = main(["daemon", "--spool", str(tmp_path / "spool"), "--listen", "0.0.0.0:8787"])
    assert code == ExitCode.USAGE
    assert capsys.readouterr().err.strip() == (
        "batch-scheduler: --listen 0.0.0.0:8787: not a loopback address, so the HTTP API needs --token "
        "(or BATCH_DAEMON_TOKEN in .env); refusing to start")
    assert not (tmp_path / "spool").exists()


async def test_a_second_daemon_on_the_same_spool_refuses_to_start(sim, env_dir, tmp_path):
    spool = tmp_path / "spool"
    async with running_daemon(spool, env_dir, job_flags(sim.url)):
        other = Daemon(DaemonConfig(spool=str(spool), listen=("127.0.0.1", 0), flags=job_flags(sim.url)),
                       load_env=lambda: load_environment(env_dir))
        assert await other.serve() == ExitCode.USAGE
