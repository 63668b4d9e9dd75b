"""State written by the code before the ledgers shared their statements resumes on this code, exactly once:
a job directory killed mid-run (fixtures/killed_job, made by fixtures/make_killed_job.py), and a
PostgreSQL ledger made by that code's schema (fixtures/postgres_schema_1e25baa.sql), migrated on open."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
from collections import Counter

import psycopg

import batch_scheduler
from batch_scheduler.state.ledger import pg
from batch_scheduler.state.ledger.rows import ChunkState

from ..conftest import KEY
from ..helpers import ids_of, read_results, write_requests

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
FAST = {"poll_min": 0.01, "poll_max": 0.05}


async def test_a_job_directory_killed_mid_run_by_the_earlier_code_resumes_and_finishes_exactly_once(
        sim, tmp_path, monkeypatch):
    shutil.copytree(os.path.join(FIXTURES, "killed_job"), tmp_path / "job")
    monkeypatch.chdir(tmp_path / "job")
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    before = sqlite3.connect("out/ledger.db")
    states = Counter(s for (s,) in before.execute("SELECT state FROM chunks"))
    (inputs,) = before.execute("SELECT value FROM meta WHERE key='inputs'").fetchone()
    moved = [{**p, "path": str(tmp_path / "job" / "in.jsonl")} for p in json.loads(inputs)]  # the job moved here
    before.execute("UPDATE meta SET value=? WHERE key='inputs'", (json.dumps(moved),))
    before.commit()
    before.close()
    assert states == {ChunkState.COLLECTED: 1, ChunkState.SUBMITTING: 1}  # killed after step 1 of batch two
    assert len(read_results("out")) == 3

    result = await batch_scheduler.arun("in.jsonl", "out", base_url=sim.url, batch_size=3, shards=2, concurrency=1,
                                        **FAST)  # the options the job was started with

    assert result.exit_code == 0, result.message
    assert sorted(ids_of(read_results("out"))) == [f"req-{i}" for i in range(9)]  # each once, none lost
    assert result.summary["requests"]["finished"] == 9


def columns(url: str) -> list[tuple]:
    with psycopg.connect(url) as db:
        return db.execute("SELECT table_name, column_name, data_type, is_nullable, column_default"
                          " FROM information_schema.columns WHERE table_schema = %s ORDER BY 1, 2",
                          (pg.SCHEMA_NAME,)).fetchall()


async def test_a_postgres_ledger_made_by_the_earlier_schema_runs_a_job_to_done_exactly_once(pg_server, sim, tmp_path):
    pg_url, fresh = pg_server.new_database(), pg_server.new_database()
    with open(os.path.join(FIXTURES, "postgres_schema_1e25baa.sql")) as f:
        old = f.read()
    with psycopg.connect(pg_url, autocommit=True) as db:  # the ledger as the earlier code made it
        db.execute(old)
        db.execute("INSERT INTO batch_scheduler.jobs (id, name, state, spec) VALUES (1000, 'before', 'done', '{}')")
        db.execute("INSERT INTO batch_scheduler.chunks (job_id, kind, take, state, intent_at) VALUES"
                   " (1000, 'input', 5, 'submitting', 100.0), (1000, 'input', 5, 'collected', 90.0)")
    # the migration brings the earlier tables to the schema in use: column for column what a new one has
    await asyncio.to_thread(pg.ensure_schema, pg_url)
    await asyncio.to_thread(pg.ensure_schema, fresh)
    assert columns(pg_url) == columns(fresh)
    with psycopg.connect(pg_url) as db:  # a chunk the earlier code left submitting may have been at its create
        assert db.execute("SELECT state, create_at FROM batch_scheduler.chunks ORDER BY intent_at").fetchall() == [
            ("collected", None), ("submitting", 100.0)]
    from batch_scheduler.cluster.node import Node, NodeConfig
    from batch_scheduler.cluster.queue import Queue

    from ..cluster.helpers import manifest_lines, queue_job
    inp, out = str(tmp_path / "in.jsonl"), str(tmp_path / "out")
    want = write_requests(inp, 40)
    await asyncio.to_thread(queue_job, pg_url, "old", [inp], out, {"batch_size": 15})
    # how the node polls is the node's (the trust rule), and it reads and writes under the test's directory
    node = Node(NodeConfig(pg_url, node_id="node-a", lease_s=6, poll_s=0.05, flags=FAST,
                           allow_roots=(str(tmp_path),)),
                load_env=lambda: {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": sim.url})
    task = asyncio.create_task(node.serve())
    q = Queue(pg_url)
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while {j["name"]: j["state"] for j in await asyncio.to_thread(q.status)}["old"] != "done":
            assert asyncio.get_running_loop().time() < deadline, await asyncio.to_thread(q.status)
            assert not task.done()
            await asyncio.sleep(0.05)
    finally:
        await asyncio.to_thread(q.close)
        node.handle_signal(15)
        assert await asyncio.wait_for(task, 20) == 0
    assert sorted(r["custom_id"] for r in manifest_lines(out)) == want
