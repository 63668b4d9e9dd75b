"""What the inbox takes: regular files only, never a link to someone else's file; a claim that fails half-way
(a full disk) leaves nothing behind and keeps the job's name; claimed files are their owner's only."""

from __future__ import annotations

import errno
import json
import logging
import os
import resource
import signal
import stat
from contextlib import contextmanager

import pytest

from batch_scheduler.daemon.spool import Spool

from ..helpers import write_requests
from .helpers import assert_exactly_once, drop, job_flags, running_daemon, state, summary, until

pytestmark = pytest.mark.timeout(20)


async def test_a_symbolic_link_in_the_inbox_is_never_claimed_nor_followed(sim, env_dir, tmp_path, caplog):
    spool, other = tmp_path / "spool", tmp_path / "tenant-b"
    other.mkdir()
    write_requests(str(other / "private.jsonl"), 10, prefix="private")
    (other / "options.json").write_text(json.dumps({"batch_size": 3}))
    (spool / "inbox").mkdir(parents=True)
    os.symlink(other / "private.jsonl", spool / "inbox" / "stolen.jsonl")
    os.symlink(other / "options.json", spool / "inbox" / "linked.options.json")
    with caplog.at_level(logging.WARNING, logger="batch_scheduler.daemon"):
        async with running_daemon(spool, env_dir, job_flags(sim.url)):
            write_requests(str(spool / "inbox" / ".linked.tmp"), 5, prefix="linked")
            os.rename(spool / "inbox" / ".linked.tmp", spool / "inbox" / "linked.jsonl")
            good = drop(spool, "good", 12)
            await until(lambda: state(spool, "good") == "done" and state(spool, "linked") == "failed", "claimed")
            assert summary(spool, "linked")["reason"] == ("options: options.json is a symbolic link; a job's options "
                                                          "must be a file of its own")
    assert not (spool / "jobs" / "stolen").exists()
    assert (spool / "inbox" / "stolen.jsonl").is_symlink()
    assert [r.getMessage() for r in caplog.records if "stolen" in r.getMessage()] == [
        "inbox/stolen.jsonl is a symbolic link: not claimed (rename the file itself into the inbox)"]
    assert sim.stats["requests_created"] == 12  # nothing of private.jsonl was sent
    assert_exactly_once(spool, "good", good)


def test_an_input_swapped_for_a_link_after_it_was_seen_is_put_back_not_claimed(tmp_path):
    spool = Spool(str(tmp_path / "spool"))
    spool.ensure()
    write_requests(os.path.join(spool.inbox, "a.jsonl"), 3)
    assert spool.arrivals() == ["a.jsonl"]
    os.unlink(os.path.join(spool.inbox, "a.jsonl"))
    os.symlink(tmp_path / "elsewhere.jsonl", os.path.join(spool.inbox, "a.jsonl"))
    assert spool.claim("a.jsonl", "a") is None
    assert os.listdir(spool.jobs) == [] and os.path.islink(os.path.join(spool.inbox, "a.jsonl"))


def test_a_claimed_input_and_its_options_are_owner_only(tmp_path):
    spool = Spool(str(tmp_path / "spool"))
    spool.ensure()
    write_requests(os.path.join(spool.inbox, "a.jsonl"), 3)
    with open(os.path.join(spool.inbox, "a.options.json"), "w") as f:
        f.write('{"batch_size": 2}')
    for name in ("a.jsonl", "a.options.json"):
        os.chmod(os.path.join(spool.inbox, name), 0o644)  # as a producer with another umask made them
    job = spool.claim("a.jsonl", "a")
    assert job is not None
    for name in ("input.jsonl", "options.json"):
        assert stat.S_IMODE(os.stat(os.path.join(job.dir, name)).st_mode) == 0o600, name


def test_a_claim_is_durable_before_its_job_runs(tmp_path, monkeypatch):
    """Once claimed, the input is gone from the inbox and the job's directory is under its name after a crash
    too: both directories are synced (an inbox that got its file back would run the job a second time)."""
    spool = Spool(str(tmp_path / "spool"))
    spool.ensure()
    write_requests(os.path.join(spool.inbox, "a.jsonl"), 3)
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    job = spool.claim("a.jsonl", "a")
    assert job is not None and os.listdir(spool.inbox) == []
    assert synced[-2:] == [spool.jobs, spool.inbox]


@contextmanager
def small_files():
    """Writes past 100 bytes fail as on a full disk (RLIMIT_FSIZE; SIGXFSZ ignored so the write says EFBIG)."""
    before_signal = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    before_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100, before_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, before_limit)
        signal.signal(signal.SIGXFSZ, before_signal)


def test_a_claim_that_fails_on_a_full_disk_leaves_nothing_and_keeps_the_name(tmp_path):
    spool = Spool(str(tmp_path / "spool"))
    spool.ensure()
    write_requests(os.path.join(spool.inbox, "daily.jsonl"), 3)
    with open(os.path.join(spool.inbox, "daily.options.json"), "w") as f:
        f.write('{"batch_size": 2}')
    with small_files(), pytest.raises(OSError) as err:
        spool.claim("daily.jsonl", "daily")
    assert err.value.errno == errno.EFBIG
    assert os.listdir(spool.jobs) == []  # no .daily.claim left behind to push the next claim to daily-2
    assert sorted(os.listdir(spool.inbox)) == ["daily.jsonl", "daily.options.json"]
    assert not spool.taken("daily")
    job = spool.claim("daily.jsonl", "daily")  # room again: the same job, under its own name
    assert job is not None and sorted(os.listdir(job.dir)) == ["input.jsonl", "options.json", "summary.json"]
