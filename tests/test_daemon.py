"""The daemon as an operator meets it: a spool, signals, a refused key, an HTTP API, fair sharing."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from batch_scheduler.commands.cli import main
from batch_scheduler.core.errors import ExitCode
from batch_scheduler.core.logs import JsonFormatter, add_secret
from batch_scheduler.core.settings import load_environment
from batch_scheduler.daemon.logs import JobContextFilter, current_job
from batch_scheduler.daemon.server import Daemon, DaemonConfig
from batch_scheduler.daemon.slots import FairSlots
from batch_scheduler.daemon.spool import Spool
from batch_scheduler.job.status import job_status
from batch_scheduler.simulator import SimConfig, Simulator
from batch_scheduler.simulator.process import SimulatorProcess

from .helpers import ids_of, read_results, write_requests

pytestmark = pytest.mark.timeout(20)

KEY = "sk-daemon-key-one-0001"
NEW_KEY = "sk-daemon-key-two-0002"
TOKEN = "daemon-token-0123456789"
ROOT = Path(__file__).resolve().parents[1]


# -- helpers ----------------------------------------------------------------------------------------

async def until(condition: Callable[[], bool], what: str = "condition", timeout_s: float = 15.0) -> None:
    """Wait for an observable condition, with a deadline (no test coordinates by sleeping)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:g} s"
        await asyncio.sleep(0.01)


def wait_until(condition: Callable[[], bool], what: str = "condition", timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:g} s"
        time.sleep(0.02)


def drop(spool: Path, name: str, n: int, *, options: dict | None = None) -> list[str]:
    """Put a job into the inbox the way a producer should: write aside, rename in (options first)."""
    inbox = spool / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    if options is not None:
        (inbox / f".{name}.options.tmp").write_text(json.dumps(options))
        os.rename(inbox / f".{name}.options.tmp", inbox / f"{name}.options.json")
    ids = write_requests(str(inbox / f".{name}.tmp"), n, prefix=name)
    os.rename(inbox / f".{name}.tmp", inbox / f"{name}.jsonl")
    return ids


def summary(spool: Path, name: str) -> dict:
    try:
        return json.loads((spool / "jobs" / name / "summary.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def state(spool: Path, name: str) -> str | None:
    return summary(spool, name).get("state")


def assert_exactly_once(spool: Path, name: str, ids: list[str]) -> None:
    got = ids_of(read_results(str(spool / "jobs" / name)))
    twice = [cid for cid, n in Counter(got).items() if n > 1]
    assert not twice, f"{name}: {len(twice)} custom_id(s) written more than once, e.g. {twice[:3]}"
    assert sorted(got) == sorted(ids), f"{name}: {len(got)} results for {len(ids)} requests"


def job_flags(url: str, **changes) -> dict:
    return {"base_url": url, "batch_size": 20, "concurrency": 2, "poll_min": 0.02, "poll_max": 0.05,
            "shards": 4, **changes}


@pytest.fixture
def env_dir(tmp_path, monkeypatch) -> Path:
    """A directory whose .env holds KEY; nothing key-like comes from the test process's environment."""
    for name in ("ANTHROPIC_API_KEY", "CLAUDE_API_KEY", "ANTHROPIC_BASE_URL", "CLAUDE_BASE_URL", "CLAUDE_MODEL",
                 "BATCH_PROVIDER", "BATCH_DAEMON_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    d = tmp_path / "etc"
    d.mkdir()
    (d / ".env").write_text(f"ANTHROPIC_API_KEY={KEY}\n")
    return d


@pytest.fixture
async def sim():
    simulator = Simulator(SimConfig(valid_keys={KEY}, processing_s=0.3, seed=7))
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


class Running:
    def __init__(self, daemon: Daemon, task: asyncio.Task):
        self.daemon = daemon
        self.task = task
        self.exit_code: int | None = None

    async def stop(self) -> int:
        """The SIGTERM path, in-process: the handler the signal would call."""
        self.daemon.handle_signal(signal.SIGTERM)
        self.exit_code = await self.task
        return self.exit_code


@asynccontextmanager
async def running_daemon(spool: Path, env_dir: Path, flags: dict, **config) -> AsyncIterator[Running]:
    daemon = Daemon(DaemonConfig(spool=str(spool), listen=("127.0.0.1", 0), flags=flags, inbox_poll_s=0.02,
                                 **config),
                    load_env=lambda: load_environment(env_dir))
    run = Running(daemon, asyncio.create_task(daemon.serve()))
    await until(lambda: daemon.started.is_set() or run.task.done(), "daemon started")
    assert not run.task.done(), f"the daemon did not start (exit {run.task.result()})"
    try:
        yield run
    finally:
        if not run.task.done():
            await run.stop()


# -- FairSlots: one budget, shared round-robin --------------------------------------------------------

async def test_fair_slots_grant_round_robin_among_waiting_jobs():
    grants: list[str] = []
    pool = FairSlots(2, on_grant=grants.append)
    big, small, mid = pool.handle("big"), pool.handle("small"), pool.handle("mid")
    await big.acquire()
    await big.acquire()  # big holds the whole budget
    waiters = [asyncio.create_task(big.acquire()) for _ in range(4)]
    await until(lambda: pool.waiting == 4)
    waiters += [asyncio.create_task(small.acquire()) for _ in range(2)]
    waiters += [asyncio.create_task(mid.acquire()) for _ in range(2)]
    await until(lambda: pool.waiting == 8)
    grants.clear()
    handles = [big, small, mid]
    for _ in range(8):
        await until(lambda: sum(h.held for h in handles) == pool.in_use, "granted acquires returned")
        next(h for h in handles if h.held).release()
    await asyncio.gather(*waiters)
    assert grants == ["big", "small", "mid", "big", "small", "mid", "big", "big"]
    assert pool.in_use == 2 and pool.waiting == 0


async def test_a_job_with_many_batches_waiting_does_not_starve_a_job_with_one():
    grants: list[str] = []
    pool = FairSlots(4, on_grant=grants.append)
    huge, tiny = pool.handle("huge"), pool.handle("tiny")
    for _ in range(4):
        await huge.acquire()
    queued = [asyncio.create_task(huge.acquire()) for _ in range(1000)]
    await until(lambda: pool.waiting == 1000)
    late = asyncio.create_task(tiny.acquire())
    await until(lambda: pool.waiting == 1001)
    grants.clear()
    huge.release()
    huge.release()  # two jobs wait: two freed slots reach both
    await late
    assert sorted(grants) == ["huge", "tiny"]
    for t in queued:
        t.cancel()
    await asyncio.gather(*queued, return_exceptions=True)
    assert pool.waiting == 0


async def test_a_cancelled_wait_and_a_closed_handle_give_their_slots_back():
    pool = FairSlots(2)
    a, b = pool.handle("a"), pool.handle("b")
    await a.acquire()
    await a.acquire()
    waiting = asyncio.create_task(b.acquire())
    await until(lambda: pool.waiting == 1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert pool.waiting == 0 and pool.in_use == 2
    a.close()  # a run that was stopped or refused still held two slots
    assert pool.in_use == 0 and a.held == 0
    await b.acquire()
    assert pool.in_use == 1


async def test_a_jobs_own_concurrency_caps_its_share_of_the_budget():
    pool = FairSlots(3)
    capped = pool.handle("capped", limit=1)
    await capped.acquire()
    second = asyncio.create_task(capped.acquire())
    await until(lambda: pool.in_use == 1 and not second.done())
    other = pool.handle("other")
    await other.acquire()
    await other.acquire()  # the budget is there for others
    assert pool.in_use == 3 and not second.done()
    capped.release()
    other.release()
    await second
    assert capped.held == 1


# -- staying up: SIGTERM, restart, exactly once -----------------------------------------------------

def start_daemon_process(spool: Path, sim_url: str, workdir: Path, log_path: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("CLAUDE_API_KEY", "BATCH_DAEMON_TOKEN")}
    env["ANTHROPIC_API_KEY"] = KEY
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "batch_scheduler", "daemon", "--spool", str(spool), "--listen", "127.0.0.1:0",
           "--base-url", sim_url, "--batch-size", "25", "--concurrency", "4", "--poll-min", "0.05",
           "--poll-max", "0.1", "--shards", "4", "--inbox-poll-s", "0.05"]
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                                stderr=log_file)
    wait_until(lambda: b"listening on" in log_path.read_bytes() or proc.poll() is not None, "daemon listening")
    assert proc.poll() is None, log_path.read_text()
    return proc


def test_three_jobs_stopped_by_sigterm_finish_after_a_restart_each_request_exactly_once(tmp_path):
    spool, log_path = tmp_path / "spool", tmp_path / "daemon.log"
    with SimulatorProcess(["--keys", KEY, "--processing-s", "0.4"]) as sim:
        assert sim.url is not None
        proc = start_daemon_process(spool, sim.url, tmp_path, log_path)
        try:
            ids = {name: drop(spool, name, 150) for name in ("a", "b", "c")}
            wait_until(lambda: sim.stats()["creates"] >= 4, "first batches created")
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=15)
            stop_s = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        print(f"SIGTERM -> exit: {stop_s:.2f} s")
        assert code == ExitCode.OK, log_path.read_text()
        assert stop_s < 10
        states = {name: state(spool, name) for name in ids}
        assert "queued" in states.values(), f"the stop did not land in the middle: {states}"
        assert set(states.values()) <= {"queued", "done"}
        interrupted = next(n for n, s in states.items() if s == "queued")
        assert summary(spool, interrupted)["reason"] == ("the daemon stopped; the job resumes where it was at "
                                                         "the next start")

        proc = start_daemon_process(spool, sim.url, tmp_path, log_path)
        try:
            wait_until(lambda: all(state(spool, n) == "done" for n in ids), "all three jobs done")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == ExitCode.OK
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name, want in ids.items():
        assert_exactly_once(spool, name, want)
        assert not (spool / "inbox" / f"{name}.jsonl").exists()
    assert KEY not in log_path.read_text()


async def test_in_process_sigterm_stops_running_jobs_in_time_and_they_resume(sim, env_dir, tmp_path):
    spool = tmp_path / "spool"
    async with running_daemon(spool, env_dir, job_flags(sim.url)) as run:
        ids = drop(spool, "job", 200)
        await until(lambda: sim.stats["creates"] >= 2, "batches created")
        assert await run.stop() == ExitCode.OK
    assert run.daemon.stop_took_s is not None and run.daemon.stop_took_s < 10
    assert state(spool, "job") == "queued"
    # restarted with another default batch size: the started job keeps the one it was cut with
    async with running_daemon(spool, env_dir, job_flags(sim.url, batch_size=30)):
        await until(lambda: state(spool, "job") == "done", "job done after restart")
    assert_exactly_once(spool, "job", ids)


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


# -- a refused key pauses; SIGHUP or the periodic check resumes ---------------------------------------

async def test_a_key_refused_mid_job_pauses_it_and_sighup_after_fixing_env_resumes_it(sim, env_dir, tmp_path):
    spool = tmp_path / "spool"
    async with running_daemon(spool, env_dir, job_flags(sim.url), key_check_s=3600) as run:
        ids = drop(spool, "job", 200)
        await until(lambda: sim.stats["creates"] >= 1, "first batch created")
        sim.config.valid_keys = {NEW_KEY}  # the provider rotated the key away
        await until(lambda: state(spool, "job") == "paused", "job paused")
        reason = summary(spool, "job")["reason"]
        assert reason == ("the API refused the key (HTTP 401): check ANTHROPIC_API_KEY (or CLAUDE_API_KEY) in .env "
                          "and send SIGHUP; the key is checked again every 3600 s. Every batch in flight is kept in "
                          "the ledger")
        assert run.daemon.slots.in_use == 0, "a paused job holds no slot"
        (env_dir / ".env").write_text(f"ANTHROPIC_API_KEY={NEW_KEY}\n")
        run.daemon.handle_signal(signal.SIGHUP)
        await until(lambda: state(spool, "job") == "done", "job done after SIGHUP")
        assert run.daemon.totals.key_checks["accepted"] == 1
    assert_exactly_once(spool, "job", ids)
    assert KEY not in (spool / "jobs" / "job" / "summary.json").read_text()


async def test_a_paused_job_checks_the_key_every_interval_and_resumes_by_itself(sim, env_dir, tmp_path):
    spool = tmp_path / "spool"
    async with running_daemon(spool, env_dir, job_flags(sim.url), key_check_s=0.1) as run:
        ids = drop(spool, "job", 100)
        await until(lambda: sim.stats["creates"] >= 1, "first batch created")
        sim.config.valid_keys = {NEW_KEY}
        await until(lambda: state(spool, "job") == "paused", "job paused")
        await until(lambda: run.daemon.totals.key_checks["refused"] >= 2, "the key checked again, still refused")
        sim.config.valid_keys = {KEY, NEW_KEY}  # the provider takes the old key back
        await until(lambda: state(spool, "job") == "done", "job done without a signal")
    assert_exactly_once(spool, "job", ids)


# -- failures stay with their job -------------------------------------------------------------------

async def test_bad_options_and_an_unreadable_input_fail_their_jobs_and_the_daemon_goes_on(sim, env_dir, tmp_path):
    spool = tmp_path / "spool"
    async with running_daemon(spool, env_dir, job_flags(sim.url)):
        drop(spool, "opts", 10, options={"batch_size": 5, "colour": "blue"})
        (spool / "inbox" / ".broken.tmp").write_bytes(b"this is not gzip at all")
        os.rename(spool / "inbox" / ".broken.tmp", spool / "inbox" / "broken.jsonl.gz")
        good = drop(spool, "good", 30, options={"batch_size": 10})
        finals = {"done", "failed", "cancelled"}
        await until(lambda: all(state(spool, n) in finals for n in ("opts", "broken", "good")), "three jobs ended")
        assert state(spool, "good") == "done"
        assert summary(spool, "opts") | {} and state(spool, "opts") == "failed"
        assert summary(spool, "opts")["reason"] == ("options: unknown option(s) colour; use the names of the "
                                                    "command-line flags in snake_case (e.g. batch_size)")
        assert state(spool, "broken") == "failed"
        assert summary(spool, "broken")["reason"].startswith("BadGzipFile: ")
    assert_exactly_once(spool, "good", good)
    assert sim.stats["creates"] == 3, "good was cut by its own batch_size (10)"


# -- HTTP -------------------------------------------------------------------------------------------

async def test_healthz_answers_while_jobs_run_and_metrics_parse(sim, env_dir, tmp_path):
    sim.config.processing_s = 1.0
    spool = tmp_path / "spool"
    async with running_daemon(spool, env_dir, job_flags(sim.url)) as run, aiohttp.ClientSession() as http:
        drop(spool, "slow", 60)
        await until(lambda: state(spool, "slow") == "running" and run.daemon.slots.in_use == 2
                    and run.daemon.slots.waiting == 1, "two batches in flight, the third waiting for a slot")
        async with http.get(run.daemon.url + "/healthz") as r:
            assert r.status == 200
            health = await r.json()
        assert health["status"] == "ok" and health["jobs"] == {"running": 1}
        async with http.get(run.daemon.url + "/jobs/slow") as r:
            job = await r.json()
        assert job["state"] == "running" and job["reason"] is None
        assert set(job["progress"]) >= {"read", "submitted", "finished", "accepted"}
        assert job["batches_in_flight"] == 2
        assert set(job) >= {"spend_usd", "eta_s", "tokens", "results"}
        async with http.get(run.daemon.url + "/jobs") as r:
            assert [j["name"] for j in (await r.json())["jobs"]] == ["slow"]
        async with http.get(run.daemon.url + "/jobs/nope") as r:
            assert r.status == 404
        async with http.get(run.daemon.url + "/metrics") as r:
            assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            text = await r.text()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    jobs = {s.labels["state"]: s.value for s in fams["batch_scheduler_jobs"].samples}
    assert jobs["running"] == 1
    calls = {(s.labels["endpoint"], s.labels["status"]): s.value for s in fams["batch_scheduler_http_calls"].samples}
    assert calls[("create", "200")] == 2
    assert fams["batch_scheduler_batches_in_flight"].samples[0].value == 2
    slots = {s.labels["kind"]: s.value for s in fams["batch_scheduler_slots"].samples}
    assert slots == {"capacity": 2, "in_use": 2, "waiting": 1}
    assert {"batch_scheduler_poll_calls", "batch_scheduler_result_bytes", "batch_scheduler_tokens",
            "batch_scheduler_spend_usd", "batch_scheduler_requests", "batch_scheduler_http_retries"} <= set(fams)


async def test_with_a_token_a_bad_or_missing_bearer_gets_401_and_healthz_stays_open(sim, env_dir, tmp_path):
    spool = tmp_path / "spool"
    async with running_daemon(spool, env_dir, job_flags(sim.url), token=TOKEN) as run, \
            aiohttp.ClientSession() as http:
        url = run.daemon.url
        for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Basic {TOKEN}"}):
            async with http.get(url + "/jobs", headers=headers) as r:
                assert r.status == 401
                assert await r.json() == {"error": "missing or wrong bearer token"}
        async with http.post(url + "/jobs/x/cancel", headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 401
        async with http.get(url + "/jobs", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200
        async with http.get(url + "/healthz") as r:
            assert r.status == 200


@pytest.fixture
def root_logging():
    """cli.main sets up logging on the root logger: put it back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_listening_beyond_loopback_without_a_token_refuses_to_start(tmp_path, monkeypatch, capsys, root_logging):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BATCH_DAEMON_TOKEN", raising=False)
    code = main(["daemon", "--spool", str(tmp_path / "spool"), "--listen", "0.0.0.0:8787"])
    assert code == ExitCode.USAGE
    assert capsys.readouterr().err.strip() == (
        "batch-scheduler: --listen 0.0.0.0:8787: not a loopback address, so the HTTP API needs --token "
        "(or BATCH_DAEMON_TOKEN in .env); refusing to start")
    assert not (tmp_path / "spool").exists()


async def test_cancel_through_the_api_cancels_the_batches_at_the_provider(sim, env_dir, tmp_path):
    sim.config.processing_s = 60.0  # batches would not end by themselves
    spool = tmp_path / "spool"
    async with running_daemon(spool, env_dir, job_flags(sim.url, concurrency=4)) as run, \
            aiohttp.ClientSession() as http:
        drop(spool, "long", 60)
        await until(lambda: sim.stats["creates"] == 3 and run.daemon.slots.in_use == 3, "three batches in flight")
        await until(lambda: len(job_status(str(spool / "jobs" / "long"))["batches_in_flight"]) == 3,
                    "three batches recorded in the ledger")
        async with http.post(run.daemon.url + "/jobs/long/cancel") as r:
            assert r.status == 202
            answer = await r.json()
        assert answer["batches_cancelled"] == 3 and answer["errors"] == []
        await until(lambda: state(spool, "long") == "cancelled", "job cancelled")
        assert summary(spool, "long")["reason"] == "cancelled; what its batches finished is in results/"
        assert sim.stats["cancels"] == 3
        async with http.post(run.daemon.url + "/jobs/long/cancel") as r:
            assert r.status == 409


# -- the spool and the logs -------------------------------------------------------------------------

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


async def test_a_second_daemon_on_the_same_spool_refuses_to_start(sim, env_dir, tmp_path):
    spool = tmp_path / "spool"
    async with running_daemon(spool, env_dir, job_flags(sim.url)):
        other = Daemon(DaemonConfig(spool=str(spool), listen=("127.0.0.1", 0), flags=job_flags(sim.url)),
                       load_env=lambda: load_environment(env_dir))
        assert await other.serve() == ExitCode.USAGE


def test_json_log_lines_carry_fields_and_extras_and_never_the_key():
    secret = "sk-json-log-secret-0042"
    add_secret(secret)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("scheduler.test-json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("job %s: key %s refused", "big", secret, extra={"job": "big", "api_key": secret, "n": 3})
        try:
            raise ValueError(f"boom {secret}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert set(first) == {"ts", "level", "logger", "msg", "job", "api_key", "n"}
    assert first["level"] == "warning" and first["logger"] == "scheduler.test-json"
    assert first["msg"] == "job big: key [redacted] refused"
    assert first["job"] == "big" and first["n"] == 3 and first["api_key"] == "[redacted]"
    assert first["ts"].endswith("Z") and len(first["ts"]) == len("2025-01-31T12:00:00.123Z")
    assert "ValueError: boom [redacted]" in second["exc"]
    assert secret not in stream.getvalue()


async def test_lines_logged_inside_a_job_name_the_job():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(JobContextFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("scheduler.test-engine")
    logger.addHandler(handler)
    logger.propagate = False

    async def engine_task() -> None:
        logger.warning("batch %s failed at the provider", "msgbatch_1")

    async def a_job() -> None:
        current_job.set("big")
        await asyncio.create_task(engine_task())  # a task the job started inherits its context

    try:
        await asyncio.create_task(a_job())
        logger.warning("outside any job")
    finally:
        logger.removeHandler(handler)
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["job"] == "big" and inside["msg"] == "[big] batch msgbatch_1 failed at the provider"
    assert "job" not in outside and outside["msg"] == "outside any job"
