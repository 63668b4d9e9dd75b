"""The outcome table (job.outcome.next_state): what a run's result makes of its job, in the daemon and the
cluster alike. It is a pure function of the result, the job's history and the rules: no clock, no I/O;
the waits it returns are values each mode turns into its own clock's deadline."""

from __future__ import annotations

import errno
import itertools

import pytest

from batch_scheduler.core import errors
from batch_scheduler.core.errors import ExitCode
from batch_scheduler.job.engine import JobResult, disk_full
from batch_scheduler.job.outcome import Cause, History, NextState, Rules, Transition, next_state, unexpected
from batch_scheduler.providers import build_settings

RULES = Rules(key_check_s=7.0, restart_waits_s=(1.0, 2.0, 3.0))
SETTINGS = build_settings({"provider": "anthropic"}, {})
KEY_REASON = ("the API refused the key (HTTP 401): check ANTHROPIC_API_KEY (or CLAUDE_API_KEY) in .env and send "
              "SIGHUP; the key is checked again every 7 s. Every batch in flight is kept in the ledger")
FULL = disk_full(OSError(errno.ENOSPC, "No space left on device", "/jobs/a/ledger.db"))
assert FULL is not None
ROOM_REASON = ("no room left to write /jobs/a/ledger.db (No space left on device): free some space; the job is "
               "tried again every 7 s and nothing is lost")


def failed(message: str = "stopped: HTTP 500", *, retry: bool = True) -> JobResult:
    return JobResult(ExitCode.FAILED, message, retry=retry)


@pytest.mark.parametrize("result, history, want", [
    (JobResult(ExitCode.OK, "done"), History(3), Transition(NextState.DONE, Cause.DONE, None, restarts=0)),
    (JobResult(ExitCode.AUTH, "refused", http_status=401), History(2),
     Transition(NextState.PAUSED, Cause.KEY_REFUSED, KEY_REASON, wait_s=7.0, restarts=0)),
    (FULL, History(2), Transition(NextState.PAUSED, Cause.DISK_FULL, ROOM_REASON, wait_s=7.0, restarts=0)),
    (FULL, History(3), Transition(NextState.PAUSED, Cause.DISK_FULL, ROOM_REASON, wait_s=7.0, restarts=0)),
    (JobResult(ExitCode.USAGE, "held by `resume`", busy=True), History(1),
     Transition(NextState.QUEUED, Cause.BUSY, "held by `resume` (trying again in 7 s)", wait_s=7.0, restarts=1)),
    (JobResult(ExitCode.SPEND_LIMIT, "the provider's spend limit is reached: HTTP 429"), History(2),
     Transition(NextState.PAUSED, Cause.SPEND_LIMIT, "the provider's spend limit is reached: HTTP 429; the job tries "
                "again every 7 s and at SIGHUP", wait_s=7.0, restarts=0)),
    (JobResult(ExitCode.SPEND_LIMIT, "spend limit"), History(3, cancel_requested=True),
     Transition(NextState.PAUSED, Cause.SPEND_LIMIT, "spend limit; the job tries again every 7 s and at SIGHUP",
                wait_s=7.0, restarts=0)),
    (failed(), History(1, cancel_requested=True),
     Transition(NextState.CANCELLED, Cause.CANCELLED, "cancelled; what its batches finished is in results/",
                restarts=1)),
    (failed(), History(0), Transition(NextState.QUEUED, Cause.RESTART, "stopped: HTTP 500 (trying again in 1 s, "
                                      "1 of 3)", wait_s=1.0, restarts=1)),
    (failed(), History(2), Transition(NextState.QUEUED, Cause.RESTART, "stopped: HTTP 500 (trying again in 3 s, "
                                      "3 of 3)", wait_s=3.0, restarts=3)),
    (failed(), History(3), Transition(NextState.FAILED, Cause.FAILED, "stopped: HTTP 500", restarts=3)),
    (failed("--strict: 2 bad line(s)", retry=False), History(0),
     Transition(NextState.FAILED, Cause.FAILED, "--strict: 2 bad line(s)", restarts=0)),
    (JobResult(ExitCode.USAGE, "input changed"), History(0),
     Transition(NextState.FAILED, Cause.FAILED, "input changed", restarts=0)),
    (JobResult(ExitCode.USAGE, "input changed", retry=True), History(0),
     Transition(NextState.FAILED, Cause.FAILED, "input changed", restarts=0)),
], ids=["done", "key-refused", "disk-full", "disk-full-after-every-restart", "busy", "spend-limit",
        "spend-limit-beats-cancel", "cancelled", "first-restart", "last-restart", "restarts-spent", "not-retryable",
        "usage", "usage-with-retry"])
def test_each_result_has_one_next_state(result, history, want):
    assert next_state(result, history, RULES, SETTINGS) == want


def test_a_refusal_without_settings_says_what_the_result_says():
    got = next_state(JobResult(ExitCode.AUTH, "the API refused the key"), History(), RULES)
    assert (got.state, got.reason) == (NextState.PAUSED, "the API refused the key")


def test_an_unexpected_error_counts_as_a_restart_and_fails_once_the_waits_are_spent():
    result = unexpected(KeyError("id"))
    steps = [next_state(result, History(n), RULES) for n in range(4)]
    assert [(t.state, t.wait_s, t.restarts) for t in steps] == [
        (NextState.QUEUED, 1.0, 1), (NextState.QUEUED, 2.0, 2), (NextState.QUEUED, 3.0, 3), (NextState.FAILED, None, 3)]
    assert steps[0].reason == "the run stopped on an unexpected error: KeyError: 'id' (trying again in 1 s, 1 of 3)"
    assert steps[3].reason == "the run stopped on an unexpected error: KeyError: 'id'"


def test_a_full_disk_raised_as_ours_is_a_pause_too():
    result = disk_full(errors.DiskFull("no room left to write /jobs/a/ledger.db (database or disk is full)"))
    assert result is not None
    got = next_state(result, History(3), RULES)
    assert (got.state, got.cause, got.restarts) == (NextState.PAUSED, Cause.DISK_FULL, 0)


def test_a_mode_names_where_a_cancelled_jobs_results_are():
    rules = Rules(cancelled_reason="cancelled; what its batches finished is in the results")
    got = next_state(failed(), History(0, cancel_requested=True), rules)
    assert got.reason == "cancelled; what its batches finished is in the results"


# -- every combination of the inputs: the rules that hold whatever else the result says ----------------

CODES = (ExitCode.OK, ExitCode.FAILED, ExitCode.USAGE, ExitCode.AUTH, ExitCode.SPEND_LIMIT)
COMBINATIONS = list(itertools.product(CODES, (False, True), (False, True), (None, "no room"), (False, True),
                                      (0, 2, 3)))


def outcome(code, retry, busy, full, cancel, restarts) -> Transition:
    result = JobResult(code, "why", retry=retry, busy=busy, disk_full=full)
    return next_state(result, History(restarts, cancel), RULES, SETTINGS)


@pytest.mark.parametrize("code, retry, busy, full, cancel, restarts", COMBINATIONS)
def test_the_table_holds_for_every_combination(code, retry, busy, full, cancel, restarts):
    t = outcome(code, retry, busy, full, cancel, restarts)
    if code == ExitCode.OK:
        assert (t.state, t.restarts) == (NextState.DONE, 0)
    elif code == ExitCode.AUTH:
        assert (t.state, t.cause, t.wait_s) == (NextState.PAUSED, Cause.KEY_REFUSED, RULES.key_check_s)
    elif full is not None:  # a full disk pauses and never counts against the restarts
        assert (t.state, t.cause, t.wait_s, t.restarts) == (NextState.PAUSED, Cause.DISK_FULL, RULES.key_check_s, 0)
    elif busy:
        assert (t.state, t.wait_s, t.restarts) == (NextState.QUEUED, RULES.key_check_s, restarts)
    elif code == ExitCode.SPEND_LIMIT:  # pauses, in every mode, whatever else holds
        assert (t.state, t.cause, t.wait_s, t.restarts) == (NextState.PAUSED, Cause.SPEND_LIMIT, 7.0, 0)
    elif cancel:
        assert (t.state, t.restarts) == (NextState.CANCELLED, restarts)
    elif code == ExitCode.FAILED and retry and restarts < 3:
        assert (t.state, t.wait_s, t.restarts) == (NextState.QUEUED, RULES.restart_waits_s[restarts], restarts + 1)
    else:  # a usage error fails at once; a stop that may pass fails once the waits are spent
        assert (t.state, t.wait_s, t.restarts) == (NextState.FAILED, None, restarts)
    assert t.restarts <= len(RULES.restart_waits_s)
