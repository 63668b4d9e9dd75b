"""The jobs of a spool never take each other's batches: what one job's ledger records, another's lost create
does not adopt (even after a restart, when nothing is in memory), and generated custom_ids carry the job's name."""

from __future__ import annotations

import json
import os
import sqlite3
import time

import pytest

from batch_scheduler.daemon.spool import Spool, write_summary
from batch_scheduler.job.engine import Engine
from batch_scheduler.job.send.claims import Claims
from batch_scheduler.job.send.submitter import Outgoing
from batch_scheduler.providers import build_settings
from batch_scheduler.state.ledger.sqlite import ChunkKind

from ..helpers import ids_of, read_results
from ..job.test_submitter import job, lines_for
from .helpers import KEY, job_flags, running_daemon, state, until

pytestmark = pytest.mark.timeout(20)


async def test_a_batch_another_spool_jobs_ledger_records_is_not_adopted(sim, tmp_path):
    sim.config.valid_keys = None  # the submitters here use the job tests' key
    spool = Spool(str(tmp_path / "spool"))
    spool.ensure()
    for name in ("a", "b", "old"):
        os.mkdir(os.path.join(spool.jobs, name))
    async with job(sim.url, os.path.join(spool.jobs, "b", "ledger.db"), provider="anthropic") as b:
        chunk = await b.ledger.record_intent(kind=ChunkKind.INPUT, root_seq=0, take=4, nbytes=1_000)
        intent_at = time.time() - 0.5
        ids = [f"same-{i}" for i in range(4)]
        (done,) = await b.submitter.submit(Outgoing(chunk, ChunkKind.INPUT, 0, 0, lines_for("anthropic", 4, "same"),
                                                    ids, 1, time.time()))
    old = os.path.join(spool.jobs, "old", "ledger.db")  # a job done long ago: its ledger is not even opened
    sqlite3.connect(old).close()
    os.utime(old, (intent_at - 3600, intent_at - 3600))
    a_dir = os.path.join(spool.jobs, "a")
    assert spool.batches_since(a_dir, intent_at - 120) == {done.info.id}
    assert spool.batches_since(os.path.join(spool.jobs, "b"), intent_at - 120) == set()
    claims = Claims(elsewhere=spool.batches_since)  # as the daemon shares it
    async with job(sim.url, os.path.join(a_dir, "ledger.db"), provider="anthropic", claims=claims, owner=a_dir) as a:
        lost = await a.ledger.record_intent(kind=ChunkKind.INPUT, root_seq=0, take=4, nbytes=1_000)
        assert await a.submitter.adopt(lost, 4, intent_at) is None


def drop_csv(spool, name: str, n: int, options: dict) -> None:
    inbox = spool / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / f".{name}.o").write_text(json.dumps(options))
    os.rename(inbox / f".{name}.o", inbox / f"{name}.options.json")
    (inbox / f".{name}.tmp").write_text("text\n" + "".join(f"row {i}\n" for i in range(n)))
    os.rename(inbox / f".{name}.tmp", inbox / f"{name}.csv")


async def test_template_jobs_without_an_id_field_get_ids_of_their_own_name(sim, env_dir, tmp_path):
    spool = tmp_path / "spool"
    options = {"template": "Say {text}", "max_tokens": 8, "model": "claude-sonnet-4-5"}
    async with running_daemon(spool, env_dir, job_flags(sim.url)):
        for name in ("mon", "tue"):
            drop_csv(spool, name, 25, options)
        await until(lambda: state(spool, "mon") == "done" and state(spool, "tue") == "done", "both done")
    for name in ("mon", "tue"):
        assert sorted(ids_of(read_results(str(spool / "jobs" / name)))) == sorted(f"{name}-{i}" for i in
                                                                                   range(1, 26))


async def test_a_job_started_before_ids_carried_its_name_keeps_the_ids_it_started_with(sim, env_dir, tmp_path):
    spool = tmp_path / "spool"
    options = {"template": "Say {text}", "max_tokens": 8, "model": "claude-sonnet-4-5"}
    drop_csv(spool, "wed", 30, options)
    Spool(str(spool)).ensure()
    claimed = Spool(str(spool)).claim("wed.csv", "wed")
    assert claimed is not None
    flags = {**job_flags(sim.url), **options}
    old = build_settings(flags, {"ANTHROPIC_API_KEY": KEY})  # as an earlier version ran it: ids from "input"
    assert (await Engine(old, claimed.dir, [claimed.input], quiet=True).run()).exit_code == 0
    db = sqlite3.connect(os.path.join(claimed.dir, "ledger.db"))
    db.execute("DELETE FROM meta WHERE key='job_name'")  # an earlier version's ledger knows no job name
    db.commit()
    db.close()
    write_summary(claimed.dir, {"state": "queued"})  # as if that version stopped with the job unfinished
    async with running_daemon(spool, env_dir, job_flags(sim.url)):
        await until(lambda: state(spool, "wed") in ("done", "failed"), "the job taken up again")
        assert state(spool, "wed") == "done"
    got = ids_of(read_results(claimed.dir))
    assert sorted(got) == sorted(f"input-{i}" for i in range(1, 31))
