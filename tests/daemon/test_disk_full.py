"""A full disk pauses a daemon job, which is tried again every --key-check-s and carries on once there is room:
it never fails for good for it (a real process whose file size limit plays the full disk)."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys

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
