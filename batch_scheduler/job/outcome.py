"""What a run's result means for its job: one table, the spool daemon's and the cluster's alike.

    result of a run                         next state   wait             restarts
    ---------------------------------------------------------------------------------------
    every request final (exit 0)            done         -                0
    the key refused (exit 3)                paused       key_check_s      0
    no room to write (wherever it happens)  paused       key_check_s      0 (never counted)
    another process holds the job           queued       key_check_s      kept
    the provider's spend limit (exit 5)     paused       key_check_s      0
    a cancel was asked                      cancelled    -                kept
    stopped for a reason that may pass      queued       restart_waits_s  + 1, while waits are left
    anything else (a usage error, ...)      failed       -                kept

`next_state` only decides; each mode persists the Transition its own way (the daemon in summary.json,
the cluster in its PostgreSQL queue) and resumes a paused job its own way: the daemon re-probes the key
(or, for room, simply runs again), the cluster claims the paused job again once its wait is over. A
cluster run that raises what the engine does not turn into a result is `unexpected(err)`: it counts as
a restart like any stop that may pass, and fails once the waits are spent.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from batch_scheduler.core.errors import ExitCode
from batch_scheduler.core.logs import redact
from batch_scheduler.core.settings import Settings
from batch_scheduler.job.engine import JobResult
from batch_scheduler.providers import key_refused_message

RESTART_WAITS_S = (5.0, 30.0, 120.0, 600.0)  # runs that stop on an error are tried again after these


class NextState(enum.StrEnum):
    """A job's state after a run (the states both modes store, spelled as they store them)."""

    DONE = "done"
    PAUSED = "paused"
    QUEUED = "queued"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Cause(enum.StrEnum):
    """Why: how a mode resumes a paused job depends on it (a key is probed, room is simply tried)."""

    DONE = "done"
    KEY_REFUSED = "key_refused"
    DISK_FULL = "disk_full"
    BUSY = "busy"
    SPEND_LIMIT = "spend_limit"
    CANCELLED = "cancelled"
    RESTART = "restart"
    FAILED = "failed"


@dataclass(frozen=True)
class History:
    """What the table needs of the job besides the run's result."""

    restarts: int = 0  # runs in a row that stopped for a reason that may pass
    cancel_requested: bool = False  # a cancel was asked, or the run's admission saw one


@dataclass(frozen=True)
class Rules:
    key_check_s: float = 60.0
    restart_waits_s: tuple[float, ...] = RESTART_WAITS_S
    cancelled_reason: str = "cancelled; what its batches finished is in results/"  # where a mode puts them


@dataclass(frozen=True)
class Transition:
    state: NextState
    cause: Cause
    reason: str | None
    wait_s: float | None = None  # before the job is run (or its key checked) again
    restarts: int = 0  # the job's restart count from now on


def next_state(result: JobResult, history: History, rules: Rules, settings: Settings | None = None) -> Transition:
    """The job's next state for what its run returned (see the table above). `settings` name the key a
    refusal is about (without them, as when the job's settings could not be read, the result says it)."""
    code, kept = result.exit_code, history.restarts
    if code == ExitCode.OK:
        return Transition(NextState.DONE, Cause.DONE, None, restarts=0)
    if code == ExitCode.AUTH:
        refused = (key_refused_reason(settings, result.http_status, rules.key_check_s) if settings is not None
                   else redact(result.message))
        return Transition(NextState.PAUSED, Cause.KEY_REFUSED, refused,
                          wait_s=rules.key_check_s, restarts=0)
    if result.disk_full is not None:  # not the job's fault: it waits for room, never fails for it
        return Transition(NextState.PAUSED, Cause.DISK_FULL, room_reason(result.disk_full, rules.key_check_s),
                          wait_s=rules.key_check_s, restarts=0)
    if result.busy:  # another process (`resume`, `cancel`) has the job: not a failure, wait for it
        return Transition(NextState.QUEUED, Cause.BUSY,
                          f"{result.message} (trying again in {rules.key_check_s:g} s)",
                          wait_s=rules.key_check_s, restarts=kept)
    if code == ExitCode.SPEND_LIMIT:
        return Transition(NextState.PAUSED, Cause.SPEND_LIMIT,
                          spend_limit_reason(redact(result.message), rules.key_check_s),
                          wait_s=rules.key_check_s, restarts=0)
    if history.cancel_requested:
        return Transition(NextState.CANCELLED, Cause.CANCELLED, rules.cancelled_reason, restarts=kept)
    waits = rules.restart_waits_s
    if code == ExitCode.FAILED and result.retry and kept < len(waits):
        wait_s = waits[kept]
        reason = f"{redact(result.message)} (trying again in {wait_s:g} s, {kept + 1} of {len(waits)})"
        return Transition(NextState.QUEUED, Cause.RESTART, reason, wait_s=wait_s, restarts=kept + 1)
    return Transition(NextState.FAILED, Cause.FAILED, redact(result.message), restarts=kept)


def unexpected(err: BaseException) -> JobResult:
    """A run that raised what the engine does not turn into a result: a stop that may pass (counted)."""
    return JobResult(ExitCode.FAILED, f"the run stopped on an unexpected error: {type(err).__name__}: {err}",
                     retry=True)


def key_refused_reason(settings: Settings, status: int | None, key_check_s: float) -> str:
    return (f"{key_refused_message(settings, status)} in .env and send SIGHUP; the key is checked again every "
            f"{key_check_s:g} s. Every batch in flight is kept in the ledger")


def spend_limit_reason(message: str, key_check_s: float) -> str:
    return f"{message}; the job tries again every {key_check_s:g} s and at SIGHUP"


def room_reason(what: str, key_check_s: float) -> str:
    return f"{redact(what)}: free some space; the job is tried again every {key_check_s:g} s and nothing is lost"


def outcome_line(summary: Mapping[str, Any]) -> str:
    req, res = summary.get("requests", {}), summary.get("results", {})
    return (f"{req.get('finished', 0):,} of {req.get('accepted', 0):,} requests finished "
            f"({res.get('succeeded', 0):,} succeeded, {res.get('errored', 0):,} errored, "
            f"{res.get('expired', 0):,} expired), {req.get('rejected', 0):,} rejected; "
            f"cost ${summary.get('cost_usd', 0):,.4f}")
