"""One owner per job directory: a second taker is refused naming the first; a dead holder blocks nothing."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from batch_scheduler.core.errors import JobBusy
from batch_scheduler.core.joblock import LOCK_FILE, JobLock

HOLDER = re.compile(r"batch-scheduler run \(pid (\d+) on [^,]+, since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\)")


def test_a_second_taker_is_refused_at_once_naming_the_holder(tmp_path):
    with JobLock.take(str(tmp_path), "batch-scheduler run"):
        with pytest.raises(JobBusy) as err:
            JobLock.take(str(tmp_path), "batch-scheduler resume")
        assert err.value.owner == "batch-scheduler run"
        m = HOLDER.fullmatch(err.value.holder)
        assert m and int(m.group(1)) == os.getpid()
        assert str(err.value) == (f"{tmp_path} is in use: {err.value.holder} holds it; wait for that to end "
                                  f"(or stop it), then run again")
    JobLock.take(str(tmp_path), "batch-scheduler resume").release()  # given back: free again
    assert os.stat(tmp_path / LOCK_FILE).st_mode & 0o777 == 0o600


def test_a_lock_of_a_killed_process_blocks_nothing(tmp_path):
    code = ("import sys, time; from batch_scheduler.core.joblock import JobLock; "
            "JobLock.take(sys.argv[1], 'batch-scheduler run'); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        with pytest.raises(JobBusy):
            JobLock.take(str(tmp_path), "batch-scheduler run")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert f'"pid":{proc.pid}' in (tmp_path / LOCK_FILE).read_text()  # its record is still there...
    JobLock.take(str(tmp_path), "batch-scheduler run").release()  # ...and means nothing


def test_an_unreadable_record_still_refuses(tmp_path):
    with JobLock.take(str(tmp_path), "batch-scheduler run") as held:
        with open(held.path, "w") as f:
            f.write("garbage")
        with pytest.raises(JobBusy) as err:
            JobLock.take(str(tmp_path), "batch-scheduler run")
    assert err.value.holder == "another process" and err.value.owner is None
