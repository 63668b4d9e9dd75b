"""A daemon job is one owner among others: it waits for a `resume` that holds it, and refuses one while it runs."""

from __future__ import annotations

import json
import re

import pytest

from batch_scheduler.core.joblock import JobLock
from batch_scheduler.daemon.spool import Spool
from batch_scheduler.job.engine import Engine
from batch_scheduler.providers import build_settings

from ..helpers import write_requests
from .helpers import KEY, assert_exactly_once, drop, job_flags, running_daemon, state, summary, until

pytestmark = pytest.mark.timeout(20)


def queued_job(spool, name: str, n: int) -> list[str]:
    """A job the daemon finds queued at its start (as after a restart)."""
    Spool(str(spool)).ensure()
    d = spool / "jobs" / name
    d.mkdir()
    ids = write_requests(str(d / "input.jsonl"), n, prefix=name)
    (d / "summary.json").write_text(json.dumps({"job": name, "state": "queued", "source": f"{name}.jsonl",
                                                "input": "input.jsonl", "claimed_at": 1.0}))
    return ids


async def test_a_job_held_by_another_process_waits_queued_and_runs_once_it_is_free(sim, env_dir, tmp_path):
    spool = tmp_path / "spool"
    ids = queued_job(spool, "held", 40)
    outside = JobLock.take(str(spool / "jobs" / "held"), "batch-scheduler resume")
    try:
        async with running_daemon(spool, env_dir, job_flags(sim.url), key_check_s=0.05):
            await until(lambda: "is in use" in (summary(spool, "held").get("reason") or ""), "held job waits")
            assert state(spool, "held") == "queued"
            assert re.fullmatch(rf"{re.escape(str(spool / 'jobs' / 'held'))} is in use: batch-scheduler resume "
                                r"\(pid \d+ on [^,]+, since [\d: -]+\) holds it; wait for that to end \(or stop "
                                r"it\), then run again \(trying again in 0.05 s\)", summary(spool, "held")["reason"])
            assert sim.stats["creates"] == 0
            outside.release()
            await until(lambda: state(spool, "held") == "done", "done once free")
    finally:
        outside.release()
    assert_exactly_once(spool, "held", ids)


async def test_a_resume_of_a_job_the_daemon_runs_is_refused_naming_the_daemon_job(sim, env_dir, tmp_path):
    sim.config.processing_s = 1.0
    spool = tmp_path / "spool"
    async with running_daemon(spool, env_dir, job_flags(sim.url)):
        ids = drop(spool, "busy", 40)
        await until(lambda: sim.stats["creates"] >= 1, "the daemon's job sends")
        job_dir = str(spool / "jobs" / "busy")
        settings = build_settings(job_flags(sim.url), {"ANTHROPIC_API_KEY": KEY})
        result = await Engine(settings, job_dir, [job_dir + "/input.jsonl"], quiet=True,
                              owner="batch-scheduler resume").run()
        assert result.exit_code == 2 and result.busy
        assert "is in use: batch-scheduler daemon (job busy) (pid " in result.message
        await until(lambda: state(spool, "busy") == "done", "the daemon's job done")
    assert_exactly_once(spool, "busy", ids)
