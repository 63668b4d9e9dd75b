"""One job's life: a refused key pauses it, SIGHUP or the periodic check resumes it; failures stay with it."""

from __future__ import annotations

import os
import signal

import pytest

from batch_scheduler.job.outcome import key_refused_reason
from batch_scheduler.providers import build_settings

from .helpers import (
    KEY,
    NEW_KEY,
    assert_exactly_once,
    drop,
    job_flags,
    running_daemon,
    state,
    summary,
    until,
)

pytestmark = pytest.mark.timeout(20)


# -- a refused key pauses; SIGHUP or the periodic check resumes ------------------------------------

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


# -- the provider's spend limit pauses; the periodic check runs the job again -----------------------

async def test_a_spend_limit_pauses_the_job_with_the_providers_message_and_it_resumes_when_access_does(
        sim, env_dir, tmp_path):
    spool = tmp_path / "spool"
    sim.config.spend_cap = 40  # two batches of 20, then every create gets the spend-limit 429
    async with running_daemon(spool, env_dir, job_flags(sim.url), key_check_s=0.1) as run:
        ids = drop(spool, "job", 100)
        await until(lambda: state(spool, "job") == "paused", "job paused")
        reason = summary(spool, "job")["reason"]
        assert reason.startswith("the provider's spend limit is reached: POST create: HTTP 429 rate_limit_error: "
                                 "You have reached your specified API usage limits. You will regain access on ")
        assert reason.endswith("; the job tries again every 0.1 s and at SIGHUP")
        assert run.daemon.slots.in_use == 0, "a paused job holds no slot"
        await until(lambda: sim.stats["spend_limited"] >= 3, "the job tried again, still over the limit")
        assert state(spool, "job") in ("paused", "queued", "running")
        sim.config.spend_cap = None  # the month turned
        await until(lambda: state(spool, "job") == "done", "job done once access is back")
    assert_exactly_once(spool, "job", ids)
    assert sim.stats["requests_created"] == 100


# -- failures stay with their job ------------------------------------------------------------------

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
        assert summary(spool, "broken")["reason"].startswith(
            f"{spool / 'jobs' / 'broken' / 'input.jsonl.gz'}:1: not a gzip file (Not a gzipped file")
    assert_exactly_once(spool, "good", good)
    assert sim.stats["creates"] == 3, "good was cut by its own batch_size (10)"


@pytest.mark.parametrize("provider, status, want", [
    ("anthropic", 401, "the API refused the key (HTTP 401): check ANTHROPIC_API_KEY (or CLAUDE_API_KEY) in .env and "
                       "send SIGHUP; the key is checked again every 60 s. Every batch in flight is kept in the ledger"),
    ("openai", 403, "the API refused the key (HTTP 403): check OPENAI_API_KEY in .env and send SIGHUP; the key is "
                    "checked again every 60 s. Every batch in flight is kept in the ledger"),
    ("openai", None, "the API refused the key: check OPENAI_API_KEY in .env and send SIGHUP; the key is checked "
                     "again every 60 s. Every batch in flight is kept in the ledger"),
])
def test_a_paused_jobs_reason_names_its_providers_key_and_the_refusals_status(provider, status, want):
    settings = build_settings({"provider": provider}, {})
    assert key_refused_reason(settings, status, 60.0) == want


# -- the provider's queue is one budget for every job ------------------------------------------------

async def test_jobs_share_the_providers_queue_fairly_and_never_pass_its_limit_together(sim, env_dir, tmp_path):
    sim.config.queue_limit = 200  # the account's queue: ten batches of 20, for both jobs together
    spool = tmp_path / "spool"
    both_held = []  # what the job holding less had queued, while both had some
    async with running_daemon(spool, env_dir, job_flags(sim.url, concurrency=32)) as run:
        a, b = drop(spool, "a", 600), drop(spool, "b", 600)

        def watch() -> bool:
            for q in run.daemon.runner.queues.snapshot():
                if len(q["held"]) == 2:
                    both_held.append(min(q["held"].values()))
            return state(spool, "a") == "done" and state(spool, "b") == "done"

        await until(watch, "both jobs done")
    assert_exactly_once(spool, "a", a)
    assert_exactly_once(spool, "b", b)
    assert sim.stats["peak_queued_requests"] <= 200
    assert sim.stats["queue_full"] <= 2  # what one job learned, the other did not have to
    assert max(both_held) >= 80  # neither starved the other: each had at least ~half of the queue at once
