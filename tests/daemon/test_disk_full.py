"""A full disk pauses a daemon job, which is tried again every --key-check-s and carries on once there is room:
it never fails for good for it (a real process whose file size limit plays the full disk)."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import threading
import urllib.request

import pytest

from batch_scheduler.simulator.process import SimulatorProcess

from .helpers import KEY, ROOT, assert_exactly_once, drop, state, summary, wait_until

pytestmark = pytest.mark.timeout(60)


def limited_to(n: int):
    def limit() -> None:  # in the child: writes past n bytes of a file fail (EFBIG), as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, resource.RLIM_INFINITY))
    return limit


def test_a_full_disk_pauses_the_job_and_it_finishes_once_there_is_room(tmp_path):
    spool = tmp_path / "spool"
    env = {k: v for k, v in os.environ.items() if k not in ("CLAUDE_API_KEY", "BATCH_DAEMON_TOKEN")}
    env.update(ANTHROPIC_API_KEY=KEY, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p))
    with SimulatorProcess(["--keys", KEY]) as sim:
        cmd = [sys.executable, "-m", "batch_scheduler", "daemon", "--spool", str(spool), "--listen", "127.0.0.1:0",
               "--base-url", sim.url, "--batch-size", "25", "--poll-min", "0.05", "--poll-max", "0.1",
               "--shards", "1", "--inbox-poll-s", "0.05", "--key-check-s", "0.2"]
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, preexec_fn=limited_to(100_000))
        try:
            ids = drop(spool, "big", 300)
            wait_until(lambda: state(spool, "big") == "paused", "paused for room")
            assert re.fullmatch(rf"no room left to write {re.escape(str(spool / 'jobs' / 'big' / 'ledger.db'))} "
                                r"\((disk I/O error|database or disk is full)\): free some space; the job is tried "
                                r"again every 0.2 s and nothing is lost", summary(spool, "big")["reason"])
            resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            wait_until(lambda: state(spool, "big") == "done", "done once there is room", timeout_s=30)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert_exactly_once(spool, "big", ids)


def test_a_paused_job_whose_retry_meets_a_full_disk_before_it_runs_stays_paused_and_finishes_later(tmp_path):
    """Issue: a job paused (the provider's spend limit) whose next try met a 100% full disk while its settings
    were read (the ledger's batch options, before the run) ended `failed: options: DiskFull`, for good."""
    spool = tmp_path / "spool"
    env = {k: v for k, v in os.environ.items() if k not in ("CLAUDE_API_KEY", "BATCH_DAEMON_TOKEN")}
    env.update(ANTHROPIC_API_KEY=KEY, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p))
    lines: list[str] = []
    with SimulatorProcess(["--keys", KEY, "--spend-cap", "50"]) as sim:
        cmd = [sys.executable, "-m", "batch_scheduler", "daemon", "--spool", str(spool), "--listen", "127.0.0.1:0",
               "--base-url", sim.url, "--batch-size", "25", "--poll-min", "0.05", "--poll-max", "0.1",
               "--shards", "1", "--inbox-poll-s", "0.05", "--key-check-s", "0.2"]
        # the log goes through a pipe: a file would meet the file size limit too
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, preexec_fn=limited_to(resource.RLIM_INFINITY))
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
        reader.start()
        no_room = re.compile(r".*job big: paused: no room left to write .*ledger\.db \(disk I/O error\): free some "
                             r"space; the job is tried again every 0\.2 s and nothing is lost$")
        try:
            ids = drop(spool, "big", 300)
            wait_until(lambda: any("job big: paused: the provider's spend limit is reached" in x for x in lines),
                       "paused by the spend limit")
            # 100% full: not even the ledger's read-only open, which reads the job's batch options, has room
            resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))
            wait_until(lambda: sum(1 for x in lines if no_room.match(x)) >= 3, "paused for room, at each try")
            assert not [x for x in lines if "failed" in x], "a full disk never fails the job"
            resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            lift = urllib.request.Request(sim.url + "/_sim/config", data=b'{"spend_cap": null}', method="POST")
            urllib.request.urlopen(lift, timeout=10).close()  # the month turned
            wait_until(lambda: state(spool, "big") == "done", "done once there is room", timeout_s=30)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(timeout=5)
            proc.stderr.close()
    assert_exactly_once(spool, "big", ids)
