"""The spool: claims survive a crash, and a name already taken gives the new job a name of its own."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from batch_scheduler.daemon.spool import Spool

from ..helpers import write_requests
from .helpers import (
    assert_exactly_once,
    drop,
    job_flags,
    running_daemon,
    state,
    summary,
    until,
)

pytestmark = pytest.mark.timeout(20)


def test_an_interrupted_claim_is_finished_or_undone_at_startup(tmp_path):
    spool = Spool(str(tmp_path / "spool"))
    spool.ensure()
    jobs = Path(spool.jobs)
    inbox = Path(spool.inbox)
    # crashed after moving the options, before the input: undone, options back in the inbox
    stage = jobs / ".a.claim"
    stage.mkdir()
    (stage / "summary.json").write_text(json.dumps({"state": "queued", "source": "a.jsonl", "input": "input.jsonl"}))
    (stage / "options.json").write_text('{"batch_size": 5}')
    (inbox / "a.jsonl").write_text("{}\n")
    # crashed after moving the input: finished
    stage = jobs / ".b.claim"
    stage.mkdir()
    (stage / "summary.json").write_text(json.dumps({"state": "queued", "source": "b.jsonl.gz", "claimed_at": 1.0,
                                                    "input": "input.jsonl.gz"}))
    with gzip.open(stage / "input.jsonl.gz", "wb") as f:
        f.write(b"{}\n")
    found = spool.recover()
    assert [(j.name, j.state.value, j.input_name, j.source) for j in found] == [
        ("b", "queued", "input.jsonl.gz", "b.jsonl.gz")]
    assert sorted(os.listdir(jobs)) == ["b"]
    assert sorted(os.listdir(inbox)) == ["a.jsonl", "a.options.json"]


async def test_a_second_input_with_a_taken_name_becomes_a_job_of_its_own(sim, env_dir, tmp_path):
    sim.config.processing_s = 0.0
    spool = tmp_path / "spool"
    async with running_daemon(spool, env_dir, job_flags(sim.url)):
        first = drop(spool, "daily", 10)
        await until(lambda: state(spool, "daily") == "done", "first daily done")
        second = write_requests(str(spool / "inbox" / ".daily.tmp"), 7, prefix="second")
        os.rename(spool / "inbox" / ".daily.tmp", spool / "inbox" / "daily.jsonl")
        await until(lambda: state(spool, "daily-2") == "done", "second daily done")
    assert_exactly_once(spool, "daily", first)
    assert_exactly_once(spool, "daily-2", second)
    assert summary(spool, "daily-2")["source"] == "daily.jsonl"
