"""What a file dropped in the spool may decide: its batches and prompts, never where the key goes or what is read;
and nothing a job's own options or files hold takes the daemon down."""

from __future__ import annotations

import json
import logging
import os
import signal

import aiohttp
import pytest

from batch_scheduler.commands.main import main
from batch_scheduler.core.errors import UsageError
from batch_scheduler.core.options import DAEMON_SIDE, OPTION_FILE_NAMES, coerce_option_file
from batch_scheduler.simulator import SimConfig, Simulator
from batch_scheduler.state.ledger.sqlite import Ledger

from .helpers import KEY, assert_exactly_once, drop, job_flags, running_daemon, state, summary, until

pytestmark = pytest.mark.timeout(20)

REFUSED = ("may not be set by a job's options file: where the daemon sends its key, which files it reads and "
               "how it polls are set on the daemon's command line or in its .env; a job's options shape its "
               "batches and prompts only")
FINALS = {"done", "failed", "cancelled"}


@pytest.fixture
async def elsewhere():
    """Somewhere a hostile options file would like the key and the prompts to go."""
    simulator = Simulator(SimConfig(seed=3))
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


def drop_rows(spool, name: str, rows: list[dict], options: dict) -> None:
    inbox = spool / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / f".{name}.o").write_text(json.dumps(options))
    os.rename(inbox / f".{name}.o", inbox / f"{name}.options.json")
    (inbox / f".{name}.tmp").write_text("title,body\n" + "".join(f"{r['title']},{r['body']}\n" for r in rows))
    os.rename(inbox / f".{name}.tmp", inbox / f"{name}.csv")


async def test_options_that_steer_the_key_or_read_files_fail_their_job_and_reach_nothing(sim, elsewhere, env_dir,
                                                                                         tmp_path):
    spool = tmp_path / "spool"
    secrets_file = str(env_dir / ".env")
    async with running_daemon(spool, env_dir, job_flags(sim.url)):
        drop(spool, "url", 10, options={"base_url": elsewhere.url})
        drop(spool, "prices", 10, options={"prices": secrets_file})
        drop(spool, "headers", 10, options={"header": ["X-Forward-To: elsewhere"], "auth": "bearer"})
        drop_rows(spool, "prompt", [{"title": f"t{i}", "body": f"b{i}"} for i in range(6)],
                  {"template": secrets_file, "max_tokens": 8, "model": "claude-sonnet-4-5"})
        good = drop(spool, "good", 20, options={"batch_size": 5, "max_attempts": 2})
        names = ("url", "prices", "headers", "prompt", "good")
        await until(lambda: all(state(spool, n) in FINALS for n in names), "every job ended")
        assert summary(spool, "url")["reason"] == f"options: base_url {REFUSED}"
        assert summary(spool, "prices")["reason"] == f"options: prices {REFUSED}"
        assert summary(spool, "headers")["reason"] == f"options: auth, header {REFUSED}"
        assert state(spool, "good") == "done"
        assert state(spool, "prompt") == "done"  # the template is what the file says, not a file to read
    assert sum(elsewhere.stats["calls"].values()) == 0
    assert_exactly_once(spool, "good", good)
    ledger = Ledger(str(spool / "jobs" / "prompt" / "ledger.db"), readonly=True)
    try:
        assert ledger.read_meta()["shaping"]["template"] == secrets_file
    finally:
        ledger.close()
    for root, _, files in os.walk(spool):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                assert KEY.encode() not in fh.read(), f


async def test_a_bad_price_table_or_ledger_fails_its_job_and_the_daemon_stays_up(sim, env_dir, tmp_path):
    spool = tmp_path / "spool"
    (tmp_path / "list.json").write_text("[1, 2]")
    (env_dir / ".env").write_text(f"ANTHROPIC_API_KEY={KEY}\nBATCH_PRICES_FILE={tmp_path / 'list.json'}\n")
    broken = spool / "jobs" / "broken"
    broken.mkdir(parents=True)
    (broken / "input.jsonl").write_text("{}\n")
    (broken / "ledger.db").write_bytes(b"this is not a database" * 100)
    async with running_daemon(spool, env_dir, job_flags(sim.url)) as run, aiohttp.ClientSession() as http:
        drop(spool, "first", 10)
        await until(lambda: state(spool, "first") in FINALS and state(spool, "broken") in FINALS, "both ended")
        assert state(spool, "first") == "failed"
        assert summary(spool, "first")["reason"] == (
            f'--prices {tmp_path / "list.json"}: expected {{"models": {{"MODEL": {{"input": ..., "output": ..., '
            f'"cache_write": ..., "cache_read": ...}}}}, "batch_discount": 0.5}}')
        assert state(spool, "broken") == "failed"
        assert summary(spool, "broken")["reason"].startswith(f"{broken / 'ledger.db'} cannot be read as a ledger")
        async with http.get(run.daemon.url + "/healthz") as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"
        (env_dir / ".env").write_text(f"ANTHROPIC_API_KEY={KEY}\n")
        run.daemon.handle_signal(signal.SIGHUP)
        ids = drop(spool, "second", 10)
        await until(lambda: state(spool, "second") == "done", "the next job runs")
    assert run.exit_code == 0
    assert_exactly_once(spool, "second", ids)


def test_what_an_options_file_may_set_is_what_shapes_batches_and_prompts():
    assert sorted(OPTION_FILE_NAMES - DAEMON_SIDE) == [
        "allow_unknown_model", "at_deadline", "batch_bytes", "batch_size", "cache_system", "concurrency",
        "count_sample", "finish_by", "id_field", "max_attempts", "max_cost", "max_tokens", "max_unbilled_attempts",
        "mode", "model", "model_field", "not_found_grace", "params", "params_field", "prime_via",
        "realtime_concurrency", "retry_cancelled", "retry_wait", "shards", "strict", "system", "template", "window"]


def test_params_in_an_options_file_is_the_object_never_a_file_to_read():
    with pytest.raises(UsageError) as err:
        coerce_option_file({"params": "/etc/batch-scheduler/.env"}, "job.options.json")
    assert str(err.value) == "job.options.json: params must be the JSON object itself here, not the name of a file"
    assert coerce_option_file({"params": {"temperature": 0.2}}, "x") == {"params": {"temperature": 0.2}}


def test_a_daemon_whose_own_price_table_cannot_be_read_refuses_to_start(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        code = main(["daemon", "--spool", str(tmp_path / "spool"), "--prices", str(tmp_path / "nope.json")])
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert code == 2
    assert capsys.readouterr().err.strip() == (f"batch-scheduler: --prices {tmp_path / 'nope.json'}: [Errno 2] No such "
                                               f"file or directory: '{tmp_path / 'nope.json'}'")
    assert not (tmp_path / "spool").exists()
