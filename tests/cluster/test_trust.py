"""One trust rule for every way a job arrives: what decides where the key goes (base URL, auth, headers,
provider, prices, polling) and which files the process reads is the node's, never the job's. `submit`
refuses such an option (exit 2, one line); a node fails a spec forged into PostgreSQL that carries one,
and reads no file and writes no directory a job names outside its --allow-root."""

from __future__ import annotations

import asyncio
import json

import psycopg
import pytest
from aiohttp import web

from batch_scheduler.cluster.node import Node, NodeConfig
from batch_scheduler.cluster.queue import Queue
from batch_scheduler.commands.main import main

from ..daemon.helpers import until
from ..helpers import write_requests
from .helpers import queue_job
from .test_node import FAST, NODE_FAST, node_env

TRUST = ("may not be set by a submitted job: where the daemon sends its key, which files it reads and how it polls "
         "are set on the daemon's command line or in its .env; a job's options shape its batches and prompts only")


@pytest.fixture
async def cap():
    """A loopback server that logs every request it receives (where a stolen key would go)."""
    seen: list[str] = []

    async def log(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path} {dict(request.headers)}")
        return web.json_response({}, status=500)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", log)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


def jobs(url: str) -> dict[str, dict]:
    q = Queue(url)
    try:
        return {j["name"]: j for j in q.status()}
    finally:
        q.close()


@pytest.mark.parametrize(("flags", "named"), [
    (["--base-url", "http://127.0.0.1:9"], "--base-url"),
    (["--header", "X-Proxy-Token: s3cret-header"], "--header"),
    (["--auth", "bearer"], "--auth"),
    (["--provider", "openai"], "--provider"),
    (["--prices", "/etc/passwd"], "--prices"),
])
def test_submit_refuses_the_nodes_options_and_stores_nothing(pg_url, tmp_path, capsys, flags, named):
    inp = tmp_path / "in.jsonl"
    write_requests(str(inp), 3)
    code = main(["submit", str(inp), "--ledger", pg_url, "--name", "steal", "--out", "s3://res/steal", *flags])
    assert code == 2
    assert capsys.readouterr().err == f"batch-scheduler: submit: {named} {TRUST}\n"
    with psycopg.connect(pg_url) as db:
        tables = db.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'jobs'").fetchone()
        stored = db.execute("SELECT count(*) FROM batch_scheduler.jobs").fetchone() if tables[0] else (0,)
    assert stored == (0,)


def test_submit_stores_a_template_and_params_files_as_their_values(pg_url, tmp_path, capsys):
    rows = tmp_path / "rows.csv"
    rows.write_text("q\nwhat?\n")
    (tmp_path / "t.txt").write_text("Answer: {q}")
    (tmp_path / "p.json").write_text('{"temperature": 0.5}')
    assert main(["submit", str(rows), "--ledger", pg_url, "--name", "tpl", "--out", "s3://res/tpl", "--template",
                 str(tmp_path / "t.txt"), "--params", str(tmp_path / "p.json"), "--max-tokens", "5"]) == 0
    with psycopg.connect(pg_url) as db:
        (spec,) = db.execute("SELECT spec FROM batch_scheduler.jobs WHERE name = 'tpl'").fetchone()
    assert (spec["options"]["template"], spec["options"]["params"]) == ("Answer: {q}", {"temperature": 0.5})


@pytest.mark.parametrize(("flags", "message"), [
    (["--weight", "inf"], "--weight inf: must be a finite number above 0"),
    (["--weight", "nan"], "--weight nan: must be a finite number above 0"),
])
def test_a_weight_that_is_no_finite_number_is_a_usage_error(pg_url, tmp_path, capsys, flags, message):
    inp = tmp_path / "in.jsonl"
    write_requests(str(inp), 3)
    assert main(["submit", str(inp), "--ledger", pg_url, "--name", "w", "--out", "s3://res/w", *flags]) == 2
    assert capsys.readouterr().err == f"batch-scheduler: {message}\n"


@pytest.mark.parametrize(("flags", "message"), [
    (["--lease", "nan"], "--lease nan: must be a finite number of seconds above 0"),
    (["--lease", "inf"], "--lease inf: must be a finite number of seconds above 0"),
    (["--poll-s", "nan"], "--poll-s nan: must be a finite number of seconds above 0"),
    (["--on-done", "touch /tmp/x"], "--on-done: the spool daemon's notifications; a cluster node does not run "
                                    "them (follow `status --ledger URL` instead)"),
    (["--webhook", "http://127.0.0.1:9/"], "--webhook: the spool daemon's notifications; a cluster node does not "
                                          "run them (follow `status --ledger URL` instead)"),
])
def test_a_nodes_bad_flags_are_a_usage_error(pg_url, capsys, flags, message):
    assert main(["daemon", "--ledger", pg_url, *flags]) == 2
    assert capsys.readouterr().err == f"batch-scheduler: {message}\n"


@pytest.fixture
async def node(pg_url, sim, tmp_path):
    n = Node(NodeConfig(pg_url, node_id="node-t", lease_s=6, poll_s=0.05, flags=NODE_FAST,
                        allow_roots=(str(tmp_path / "allowed"),)), load_env=lambda: node_env(sim.url))
    task = asyncio.create_task(n.serve())
    await until(lambda: n.started.is_set() or task.done(), "node started")
    yield n
    n.handle_signal(15)
    assert await asyncio.wait_for(task, 20) == 0


async def settled(url: str, names: set[str]) -> dict[str, dict]:
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        now = await asyncio.to_thread(jobs, url)
        if all(now.get(n, {}).get("state") in ("done", "failed", "cancelled") for n in names):
            return now
        assert asyncio.get_running_loop().time() < deadline, now
        await asyncio.sleep(0.05)


async def test_a_forged_spec_that_steers_the_key_or_reads_a_file_fails_and_nothing_reaches_cap(
        pg_url, node, sim, cap, tmp_path):
    cap_url, seen = cap
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    inp = str(allowed / "in.jsonl")
    write_requests(inp, 20)
    secret = tmp_path / ".env"
    secret.write_text("ANTHROPIC_API_KEY=the-nodes-key\n")
    forged = {
        "steal": {**FAST, "base_url": cap_url},
        "header": {**FAST, "header": ["X-Proxy-Token: s3cret-header"]},
        "paramsfile": {**FAST, "params": str(secret)},
    }
    for name, options in forged.items():
        await asyncio.to_thread(queue_job, pg_url, name, [inp], str(allowed / f"out-{name}"), options)
    await asyncio.to_thread(queue_job, pg_url, "outside", [str(secret)], str(allowed / "out-outside"), FAST)
    await asyncio.to_thread(queue_job, pg_url, "writes", [inp], str(tmp_path / "elsewhere"), FAST)
    got = await settled(pg_url, {*forged, "outside", "writes"})
    door = "may not be set by a submitted job: where the daemon sends its key"
    assert got["steal"]["state"] == "failed" and got["steal"]["reason"].startswith(f"options: base_url {door}")
    assert got["header"]["state"] == "failed" and got["header"]["reason"].startswith(f"options: header {door}")
    assert (got["paramsfile"]["state"], got["paramsfile"]["reason"]) == (
        "failed", "options: params must be the JSON object itself here, not the name of a file")
    assert (got["outside"]["state"], got["outside"]["reason"]) == (
        "failed", f"input {secret}: a cluster job reads and writes object URLs (s3://, gs://, az://) or paths "
                  f"under the node's --allow-root directories ({allowed})")
    assert got["writes"]["state"] == "failed" and got["writes"]["reason"].startswith(f"--out {tmp_path / 'elsewhere'}:")
    assert seen == []
    assert sim.stats["requests_created"] == 0
    assert not (tmp_path / "elsewhere").exists()


async def test_a_template_in_a_spec_is_the_template_itself_never_a_file_the_node_reads(pg_url, node, sim, tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    rows = allowed / "rows.csv"
    rows.write_text("q\nfirst\nsecond\n")
    secret = tmp_path / "node.env"  # read as a template, its line would refuse every row (no such column)
    secret.write_text("ANTHROPIC_API_KEY={the_nodes_key}\n")
    options = {**FAST, "template": str(secret), "max_tokens": 5, "model": "claude-haiku-4-5"}
    await asyncio.to_thread(queue_job, pg_url, "tpl", [str(rows)], str(allowed / "out"), options)
    got = await settled(pg_url, {"tpl"})
    assert got["tpl"]["state"] == "done", got["tpl"]
    lines = [json.loads(line) for path in sorted((allowed / "out" / "results").glob("*.jsonl"))
             for line in path.read_text().splitlines()]
    assert sorted(r["custom_id"] for r in lines) == ["tpl-1", "tpl-2"]  # the job's name, not the file's
    assert all(r["result"]["type"] == "succeeded" for r in lines)
